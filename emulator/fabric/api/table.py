"""Every Fabric route, assembled from the area modules.

Imports the area modules; nothing from quart or yaml.
"""

from __future__ import annotations

from . import (
    assets,
    events,
    health,
    identity,
    inspector,
    jobs,
    keys,
    ledger,
    providers,
    tenancy,
    workflows,
)
from .routes import FabricApi, Route


def all_routes(api: FabricApi) -> list[Route]:
    areas: list[Route] = [
        *identity.routes(api),
        *tenancy.routes(api),
        *jobs.routes(api),
        *workflows.routes(api),
        *providers.routes(api),
        *keys.routes(api),
        *assets.routes(api),
        *ledger.routes(api),
        *events.routes(api),
        *inspector.routes(api),
    ]
    return [*health.routes(api, areas), *areas]
