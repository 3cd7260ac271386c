"""The service registry: every emulated service, one line each.

The only module of the generic layer that names a service package (the layering test enforces
it). Order matters: the first service is the primary one, whose ports the bare `--port N` and
`--tls-port N` of the first release set, and which runs when a seed has no service block at all.
"""

from __future__ import annotations

from .platform.service import Service


def registered_services() -> tuple[Service, ...]:
    """A fresh instance of every registered service, primary first."""
    from .connectsoft.service import ConnectSoftService
    from .fabric.service import FabricService
    from .foundry.service import FoundryService
    from .foundryops.service import FoundryOpsService

    services: tuple[Service, ...] = (
        FoundryService(),
        FabricService(),
        ConnectSoftService(),
        FoundryOpsService(),
    )
    return services


def service_names() -> tuple[str, ...]:
    return tuple(service.name for service in registered_services())
