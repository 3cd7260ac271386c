"""The running Foundry service: `FoundryInstance` holds the state of every Foundry area and
gives the platform its routes, banner lines, reset, shutdown and durable state. Each area keeps
its own core state and blueprint; this module only wires them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import trio
from quart import Blueprint

from ..platform.errors import ErrorFamily
from ..platform.service import ServiceContext, ServiceInstance
from ..web.rawasgi import RawRoute
from .api import errors as api_errors
from .api.admin import admin_blueprint, admin_routes
from .api.auth import BearerAuth
from .api.connectivity import connectivity_blueprint
from .api.contour import contour_blueprint, contour_routes
from .api.inspector import compute_modules_to_json, inspector_blueprint, inspector_page
from .api.oauth import oauth_blueprint, oauth_routes
from .api.ontologies import ontologies_blueprint
from .api.runtime import runtime_blueprint, runtime_routes
from .api.signin import signin_blueprint
from .broker import Broker
from .core.connectivity import Connectivity
from .core.identity import Identity
from .core.jobs import FailureKind
from .core.oauth import OAuthServer
from .core.ontologies import Ontologies
from .core.runtimes import RuntimeRegistry
from .seed import FoundrySeed, PrincipalType
from .state import FoundryState


class FoundryInstance(ServiceInstance):
    """The running Foundry service."""

    # Query names whose values the request log hides, besides the generic ones.
    secret_names = frozenset({"module_auth_token", "moduleauthtoken"})

    def __init__(self, seed: FoundrySeed, context: ServiceContext) -> None:
        self.state = FoundryState.from_seed(seed, context)

    # The areas, for tests and the embedded handle (routes use `state` directly).

    @property
    def seed(self) -> FoundrySeed:
        return self.state.seed

    @property
    def context(self) -> ServiceContext:
        return self.state.context

    @property
    def auth(self) -> BearerAuth:
        return self.state.auth

    @property
    def identity(self) -> Identity:
        return self.state.identity

    @property
    def oauth(self) -> OAuthServer:
        return self.state.oauth

    @property
    def connectivity(self) -> Connectivity:
        return self.state.connectivity

    @property
    def ontologies(self) -> Ontologies:
        return self.state.ontologies

    @property
    def runtimes(self) -> RuntimeRegistry:
        return self.state.runtimes

    @property
    def broker(self) -> Broker:
        return self.state.broker

    # ServiceInstance --------------------------------------------------------------------------

    def blueprints(self) -> Sequence[Blueprint]:
        return [
            signin_blueprint(self.state),
            oauth_blueprint(self.state),
            admin_blueprint(self.state),
            connectivity_blueprint(self.state),
            ontologies_blueprint(self.state),
            runtime_blueprint(self.state),
            contour_blueprint(self.state),
            inspector_blueprint(self.state),
        ]

    def raw_routes(self) -> Sequence[RawRoute]:
        """The hot paths (the compute-module job plane, the token endpoint and the current-user
        routes), served as raw ASGI in front of Quart."""
        return [
            *runtime_routes(self.state),
            *contour_routes(self.state),
            *oauth_routes(self.state),
            *admin_routes(self.state),
        ]

    def inspector_page(self) -> bytes | None:
        return inspector_page()

    def embedded_handle(self, handle: Any) -> Any:
        from .embedded import FoundryHandle

        return FoundryHandle(handle)

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        return api_errors.PREFIXES

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            # The job plane's deadline sweep; a reset closes the broker and builds a new one.
            broker = self.broker
            await broker.run()
            if self.broker is broker:
                await trio.sleep_forever()

    def begin_shutdown(self) -> None:
        self.broker.close(FailureKind.SHUTDOWN)

    def reset(self) -> None:
        # Answer every waiting poll and caller before the state they wait on is replaced.
        self.broker.close(FailureKind.EMULATOR_RESET)
        self.state.rebuild()

    def snapshot(self) -> dict[str, Any]:
        """The durable state for `--state-file` (emulator/foundry/persistence.py); has secrets."""
        return self._capture(lazy=False)()

    def capture(self) -> Callable[[], dict[str, Any]]:
        """All but the access tokens now; the tokens rendered off the loop."""
        return self._capture(lazy=True)

    def _capture(self, *, lazy: bool) -> Callable[[], dict[str, Any]]:
        from . import persistence

        return persistence.capture(
            self.identity.directory,
            self.identity.tokens.by_digest,
            self.oauth.grants,
            self.oauth.refresh_tokens,
            self.connectivity.connections,
            self.runtimes,
            lazy=lazy,
        )

    def restore(self, data: dict[str, Any]) -> None:
        """Lay saved state over the seed's (ValueError, changing nothing, if it is malformed)."""
        from . import persistence

        # Checks everything before anything changes.
        saved = persistence.read_snapshot(data, self.identity.directory)
        runtimes = saved.overlay_runtimes(self.runtimes)
        saved.add_service_principals(self.identity.directory)
        self.identity.tokens.by_digest.update(saved.tokens)
        self.oauth.grants.update(saved.grants)
        self.oauth.refresh_tokens.update(saved.refresh_tokens)
        self.connectivity.connections.update(saved.connections)
        # The broker resolves deployed apps through the registry: give it the restored one.
        self.broker.close(FailureKind.EMULATOR_RESET)
        self.state.replace_runtimes(runtimes)

    def describe(self) -> dict[str, Any]:
        return {
            "users": len(self.identity.directory.principals),
            "tokens": self.identity.tokens.count(),
            "connections": self.connectivity.count(),
            "ontologies": self.ontologies.count(),
            "queries": self.ontologies.query_count(),
            "runtimes": len(self.runtimes.runtimes),
            "deployedApps": len(self.runtimes.bindings),
            "jobs": self.broker.jobs.counts(),
            # Runtimes, deployed apps and recent jobs for the inspector page; never a token.
            "computeModules": compute_modules_to_json(self.state),
        }

    def banner_lines(self) -> list[str]:
        seed = self.seed
        endpoints = self.context.endpoints
        lines = []
        humans = [u for u in seed.users if u.principal_type is PrincipalType.HUMAN and u.active]
        lines.append(
            "Users:         "
            + (", ".join(f"{u.username} ({u.display_name})" for u in humans) or "none")
        )
        for client in seed.oauth_clients:
            kind = "confidential" if client.client_secret else "public"
            lines.append(
                f"OAuth client:  {client.client_id} ({kind}; {', '.join(client.grant_types)})"
            )
        if not seed.oauth_clients:
            lines.append("OAuth clients: none configured, so any client_id is accepted (dev mode)")
        for token in seed.tokens:
            scopes = " ".join(token.scopes) or "no scopes"
            lines.append(f"Token:         {token.token}  -> {token.username} [{scopes}]")
        for runtime in seed.compute_modules.runtimes:
            lines.append(f"Runtime:       {runtime.runtime_id}")
        for app in seed.compute_modules.deployed_apps:
            lines.append(
                f"Deployed app:  {app.deployed_app_rid} (branch {app.branch}) -> {app.runtime_id}"
            )
        admin_token = next((t for t in seed.tokens if "api:admin-read" in t.scopes), None)
        if admin_token is not None:
            lines.append("Quick start:")
            lines.append(
                f"  curl -H 'Authorization: Bearer {admin_token.token}' "
                f"{endpoints.base_url}/api/v2/admin/users/getCurrent"
            )
        return lines
