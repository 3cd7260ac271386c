"""Fabric as the platform sees it before it runs: `FabricService` (seed reading, the `check`
summary and warnings, the `init` starter block). The contract is `emulator/platform/service.py`.

`start` imports `emulator.fabric.instance` (the plane, the engine, the routes) only then, so a
run or a `check` that does not serve Fabric does not pay for loading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..platform.seedschema import Node
from ..platform.service import Service, ServiceContext
from .seed import STARTER_BLOCK, FabricSeed

if TYPE_CHECKING:
    from .instance import FabricInstance


class FabricService(Service):
    name = "fabric"
    title = "Fabric AI control plane"
    # The seed's port for HTTP; 3002 is its gRPC port (out of scope), so HTTPS takes 3443.
    default_http_port = 3001
    default_https_port = 3443

    def read_seed(self, block: Node | None, extra: Mapping[str, Node]) -> FabricSeed:
        return FabricSeed.from_node(block)

    def start(self, seed: Any, context: ServiceContext) -> FabricInstance:
        from .instance import FabricInstance

        if not isinstance(seed, FabricSeed):
            seed = FabricSeed.from_node(None)
        return FabricInstance(seed, context)

    def summary(self, seed: Any) -> list[str]:
        assert isinstance(seed, FabricSeed)
        keys = sum(len(org.api_keys) for org in seed.organizations)
        return [
            f"organizations: {len(seed.organizations)} (plus the default organization)",
            f"API keys: {keys}",
            f"providers: {', '.join(p.provider_id for p in seed.catalog.providers)}",
            f"mode: {'production' if seed.production else 'development'}",
        ]

    def warnings(self, seed: Any) -> list[str]:
        assert isinstance(seed, FabricSeed)
        found = []
        if (
            seed.production
            and seed.jwt_secret is None
            and not any(org.api_keys for org in seed.organizations)
        ):
            found.append(
                "fabric: production mode with neither a jwt_secret nor API keys: "
                "no request can authenticate"
            )
        return found

    def starter_block(self) -> str:
        return STARTER_BLOCK
