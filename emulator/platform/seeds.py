"""Seed documents: YAML (or a dict) to a frozen `Seed`, with errors that name the YAML path.

Owns the top level of a seed (one block per service, plus keys a service claims besides its
block, such as Foundry's `tokens:`) and finding the default seed. The only module that imports
yaml. Each service reads its own block through `emulator.platform.seedschema.Node`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from .seedschema import Node, SeedError
from .service import Service

_PACKAGED_DEFAULT = Path(__file__).resolve().parent.parent / "default_seed.yaml"
_SOURCE_TREE_DEFAULT = Path(__file__).resolve().parents[2] / "seeds" / "default.yaml"


def default_seed_path() -> Path:
    """`seeds/default.yaml` of a source checkout, else the copy shipped inside the package."""
    return _SOURCE_TREE_DEFAULT if _SOURCE_TREE_DEFAULT.is_file() else _PACKAGED_DEFAULT


@attrs.frozen
class Seed:
    source: str
    # Service name -> that service's parsed seed block (every registered service has one,
    # built from defaults when the document has no block for it).
    blocks: Mapping[str, Any]
    # The services whose block (or one of whose extra keys) the document has, in registry order:
    # the ones `serve` runs unless `--services` says otherwise.
    present: tuple[str, ...] = ()


def seed_from_data(data: Any, source: str, services: Sequence[Service]) -> Seed:
    """Check and convert a parsed document. Raises SeedError at the first problem."""
    root = Node({} if data is None else data, "", source)
    keys: list[str] = []
    for service in services:
        keys.extend((service.name, *service.extra_seed_keys))
    fields = root.fields(optional=tuple(keys))
    blocks: dict[str, Any] = {}
    present: list[str] = []
    for service in services:
        extra = {
            key: node for key in service.extra_seed_keys if (node := fields.get(key)) is not None
        }
        block = fields.get(service.name)
        if block is not None or extra:
            present.append(service.name)
        blocks[service.name] = service.read_seed(block, extra)
    return Seed(source=source, blocks=blocks, present=tuple(present))


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
