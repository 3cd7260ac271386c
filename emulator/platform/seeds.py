"""Seed documents: YAML (or a dict) to a frozen `Seed`, with errors that name the YAML path.

Owns the top level of a seed (`tokens:` plus one block per service) and finding the default
seed. The only module that imports yaml. Each service reads its own block through
`emulator.platform.seedschema.Node`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from .seedschema import Node, SeedError, TokenSeed, check_unique
from .service import Service

_PACKAGED_DEFAULT = Path(__file__).resolve().parent.parent / "default_seed.yaml"
_SOURCE_TREE_DEFAULT = Path(__file__).resolve().parents[2] / "seeds" / "default.yaml"


def default_seed_path() -> Path:
    """`seeds/default.yaml` of a source checkout, else the copy shipped inside the package."""
    return _SOURCE_TREE_DEFAULT if _SOURCE_TREE_DEFAULT.is_file() else _PACKAGED_DEFAULT


@attrs.frozen
class Seed:
    source: str
    tokens: tuple[TokenSeed, ...]
    # Service key -> that service's parsed seed block.
    blocks: Mapping[str, Any]


def seed_from_data(data: Any, source: str, services: Sequence[Service]) -> Seed:
    """Check and convert a parsed document. Raises SeedError at the first problem."""
    root = Node({} if data is None else data, "", source)
    keys = [service.key for service in services]
    fields = root.fields(optional=("tokens", *keys))
    token_nodes = fields.get("tokens")
    tokens = tuple(
        TokenSeed.from_node(token, node)
        for token, node in ([] if token_nodes is None else token_nodes.as_items())
    )
    for token_seed, (_, node) in zip(
        tokens, token_nodes.as_items() if token_nodes else [], strict=True
    ):
        if not token_seed.token.strip() or any(ch.isspace() for ch in token_seed.token):
            raise node.error("a token must be a non-empty string without spaces")
    check_unique(((Node(None, t.path, source), t.token) for t in tokens), "token")
    blocks = {
        service.key: service.read_seed(fields.get(service.key), tokens) for service in services
    }
    return Seed(source=source, tokens=tokens, blocks=blocks)


def load_seed(path: Path, services: Sequence[Service]) -> Seed:
    """Read a YAML (or JSON, which is YAML) seed file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeedError(source, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SeedError(source, "", f"cannot read the file: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise SeedError(source, "", f"not valid YAML: {where}{problem}") from None
    return seed_from_data(data, source, services)


def seed_from_mapping(data: Mapping[str, Any], services: Sequence[Service]) -> Seed:
    """A seed given as a Python dict (tests and the programmatic API)."""
    return seed_from_data(dict(data), "<dict>", services)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)
