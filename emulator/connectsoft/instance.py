"""The running ConnectSoft service: `ConnectSoftInstance` holds the core state, the engine that
moves it on the clock, the OIDC issuer with its signing key from the state directory, the REST,
OIDC and control blueprints, the gRPC and event-stream raw routes, reset and shutdown. This
module only wires them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio
from quart import Blueprint

from ..platform.errors import ErrorFamily
from ..platform.service import ServiceContext, ServiceInstance
from ..web.rawasgi import RawRoute
from . import persistence
from .api.control import control_blueprint, event_routes
from .api.errors import PREFIXES, PROBLEMS
from .api.grpc import grpc_routes
from .api.oidc import oidc_blueprint
from .api.rest import read_routes, rest_blueprint
from .core.machines import deployment_status
from .core.oidc import OidcIssuer
from .core.records import IdFactory, RandomIds
from .core.state import RuntimeState
from .engine import RuntimeEngine
from .keys import load_or_create_signing_key
from .seed import ConnectSoftSeed
from .service import ConnectSoftService


class ConnectSoftInstance(ServiceInstance):
    default_family: ErrorFamily = PROBLEMS
    secret_names = frozenset({"client_secret", "access_token"})

    def __init__(
        self, seed: ConnectSoftSeed, context: ServiceContext, ids: IdFactory | None = None
    ) -> None:
        self.seed = seed
        self.context = context
        self.ids: IdFactory = ids or RandomIds()
        key = load_or_create_signing_key(context.settings.state_dir)
        self.issuer = OidcIssuer.create(
            key,
            seed.clients,
            seed.token_lifetime,
            context.endpoints.base_url
            or f"http://127.0.0.1:{ConnectSoftService.default_http_port}",
            context.randomness.uuid,
        )
        self._replaced = trio.Event()
        self.engine = self._build_engine()

    def _build_engine(self) -> RuntimeEngine:
        clock = self.context.clock
        state = RuntimeState.from_seed(self.seed, self.ids, clock.now())
        return RuntimeEngine(state, clock)

    @property
    def state(self) -> RuntimeState:
        return self.engine.state

    # ServiceInstance ----------------------------------------------------------------------

    def blueprints(self) -> Sequence[Blueprint]:
        return [rest_blueprint(self), oidc_blueprint(self), control_blueprint(self)]

    def raw_routes(self) -> Sequence[RawRoute]:
        return [*read_routes(self), *event_routes(self), *grpc_routes(self)]

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        return PREFIXES

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            # The driver of the current engine; a reset replaces the engine and this restarts.
            replaced = self._replaced
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.engine.run)
                await replaced.wait()
                nursery.cancel_scope.cancel()

    def begin_shutdown(self) -> None:
        self.engine.close()

    def reset(self) -> None:
        # Every open stream and waiting reader is answered before the state is replaced.
        self.engine.close()
        self.engine = self._build_engine()
        replaced, self._replaced = self._replaced, trio.Event()
        replaced.set()

    def embedded_handle(self, handle: Any) -> Any:
        from .embedded import ConnectSoftHandle

        return ConnectSoftHandle(handle)

    def snapshot(self) -> dict[str, Any]:
        """The durable state for `--state-file` (emulator/connectsoft/persistence.py)."""
        return persistence.snapshot(self.engine.state)

    def capture(self) -> Callable[[], dict[str, Any]]:
        """All but the finished deployments now; those rendered off the loop."""
        return persistence.capture(self.engine.state, lazy=True)

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the seed's state with saved state (ValueError, changing nothing, if bad)."""
        state = persistence.read_snapshot(data, self.seed, self.ids)
        self.engine.close()
        self.engine = RuntimeEngine(state, self.context.clock)
        replaced, self._replaced = self._replaced, trio.Event()
        replaced.set()

    def describe(self) -> dict[str, Any]:
        state = self.engine.state
        phases: dict[str, int] = {}
        for deployment in state.deployments.values():
            status = deployment_status(deployment.phase)
            phases[status] = phases.get(status, 0) + 1
        return {
            "environments": len(state.environments),
            "services": sum(len(e.services) for e in state.environments.values()),
            "deployments": phases,
            "configurations": len(state.configurations),
            "secretBindings": len(state.bindings),
            "approvalsPending": sum(
                1 for a in state.approvals.values() if a.status.value == "Pending"
            ),
            "events": len(state.events),
            "healthStreams": self.engine.health.statistics(),
        }

    def banner_lines(self) -> list[str]:
        clients = ", ".join(c.client_id for c in self.seed.clients) or "none"
        return [
            f"OIDC clients:  {clients} (POST /connect/token, client credentials)",
            f"Environments:  {len(self.seed.environments)} seeded",
            "gRPC:          RuntimeInventory, RuntimeHealth, RuntimeDrift (HTTP/2)",
        ]
