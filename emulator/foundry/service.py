"""The Foundry service as the platform sees it before it runs: its name and ports, its seed block
(`FoundrySeed`), the `check` summary and warnings, the `init` block and the `module`
subcommand.

`start` imports `emulator.foundry.instance` (the routes, the state, Quart) only then, so a run
or a `check` that does not serve Foundry does not pay for loading it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..platform.seedschema import Node
from ..platform.service import CliCommand, Service, ServiceContext
from .core.oauth import SCOPE_DESCRIPTIONS
from .seed import FoundrySeed, read_tokens

if TYPE_CHECKING:
    from .instance import FoundryInstance


class FoundryService(Service):
    name = "foundry"
    title = "Palantir Foundry"
    default_http_port = 4000
    default_https_port = 4443
    # The top-level `tokens:` block of the first release names Foundry users.
    extra_seed_keys = ("tokens",)

    def read_seed(self, block: Node | None, extra: Mapping[str, Node]) -> FoundrySeed:
        return FoundrySeed.from_node(block, read_tokens(extra.get("tokens")))

    def start(self, seed: Any, context: ServiceContext) -> FoundryInstance:
        from .instance import FoundryInstance

        if not isinstance(seed, FoundrySeed):
            seed = FoundrySeed.from_node(None, ())
        return FoundryInstance(seed, context)

    def summary(self, seed: Any) -> list[str]:
        assert isinstance(seed, FoundrySeed)
        return [
            f"tokens: {len(seed.tokens)}",
            f"users: {len(seed.users)}",
            f"oauth clients: {len(seed.oauth_clients)}",
            f"connections: {len(seed.connections)}",
            f"ontologies: {len(seed.ontologies)} "
            f"({sum(len(o.queries) for o in seed.ontologies)} queries)",
            f"runtimes: {len(seed.compute_modules.runtimes)}",
            f"deployed apps: {len(seed.compute_modules.deployed_apps)}",
        ]

    def warnings(self, seed: Any) -> list[str]:
        assert isinstance(seed, FoundrySeed)
        return seed_warnings(seed)

    def starter_block(self) -> str:
        from .starter import STARTER_BLOCK

        return STARTER_BLOCK

    def cli_commands(self) -> Sequence[CliCommand]:
        from .launcher import MODULE_COMMAND

        return (MODULE_COMMAND,)


def seed_warnings(seed: FoundrySeed) -> list[str]:
    """Scope names no Foundry route checks: a typo there silently denies every request."""
    known = set(SCOPE_DESCRIPTIONS)
    warnings = []
    for token in seed.tokens:
        for scope in token.scopes:
            if scope not in known:
                warnings.append(f"{token.path}.scopes: unknown scope {scope!r}")
    for index, client in enumerate(seed.oauth_clients):
        for scope in client.allowed_scopes:
            if scope not in known:
                warnings.append(
                    f"foundry.oauth_clients[{index}].allowed_scopes: unknown scope {scope!r}"
                )
    if warnings:
        warnings.append(f"known scopes: {', '.join(sorted(known))}")
    return warnings
