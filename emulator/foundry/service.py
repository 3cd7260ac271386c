"""The Foundry service: builds the Foundry state from its seed block and mounts its blueprints.

Owns the `FoundryService` (seed reading, start, `check` summary, `init` block, the `module`
subcommand) and `FoundryInstance` (the state of every Foundry area, its routes, its banner
lines, reset, shutdown and durable state). Each area keeps its own core state and blueprint;
this module only wires them together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import trio
from quart import Blueprint

from ..platform.errors import ErrorFamily
from ..platform.seedschema import Node
from ..platform.service import CliCommand, Service, ServiceContext, ServiceInstance
from ..web.rawasgi import RawRoute
from .api import errors as api_errors
from .api.admin import admin_blueprint, admin_routes
from .api.auth import BearerAuth
from .api.connectivity import connectivity_blueprint
from .api.contour import contour_blueprint, contour_routes
from .api.inspector import compute_modules_to_json, inspector_blueprint
from .api.oauth import oauth_blueprint, oauth_routes
from .api.ontologies import ontologies_blueprint
from .api.runtime import runtime_blueprint, runtime_routes
from .api.signin import signin_blueprint
from .broker import Broker
from .core.connectivity import Connectivity
from .core.identity import Identity
from .core.jobs import FailureKind
from .core.oauth import SCOPE_DESCRIPTIONS, OAuthServer
from .core.ontologies import Ontologies
from .core.runtimes import RuntimeRegistry
from .seed import FoundrySeed, PrincipalType, read_tokens


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


class FoundryInstance(ServiceInstance):
    """The running Foundry service."""

    # Query names whose values the request log hides, besides the generic ones.
    secret_names = frozenset({"module_auth_token", "moduleauthtoken"})

    def __init__(self, seed: FoundrySeed, context: ServiceContext) -> None:
        self.seed = seed
        self.context = context
        self.auth = BearerAuth(lambda: self.identity, context.clock)
        self._build_state()

    def _build_state(self) -> None:
        """(Re)create every area's state from the seed."""
        now = self.context.clock.now()
        self.identity = Identity.from_seed(self.seed, now)
        self.oauth = OAuthServer.from_seed(
            self.seed, self.identity.directory, self.identity.tokens, self.context.randomness
        )
        self.connectivity = Connectivity.from_seed(self.seed.connections, now)
        self.ontologies = Ontologies.from_seed(self.seed.ontologies)
        # Compute modules: runtimes (tokens the emulator made up survive a reset) and the broker.
        self.runtimes = RuntimeRegistry.from_seed(
            self.seed.compute_modules, now, self.context.randomness, getattr(self, "runtimes", None)
        )
        self.broker = Broker.build(
            self.runtimes,
            self.seed.compute_modules.limits,
            self.context.clock,
            self.context.randomness,
        )

    # ServiceInstance --------------------------------------------------------------------------

    def blueprints(self) -> Sequence[Blueprint]:
        return [
            signin_blueprint(self),
            oauth_blueprint(self),
            admin_blueprint(self),
            connectivity_blueprint(self),
            ontologies_blueprint(self),
            runtime_blueprint(self),
            contour_blueprint(self),
            inspector_blueprint(self),
        ]

    def raw_routes(self) -> Sequence[RawRoute]:
        """The hot paths (the compute-module job plane, the token endpoint and the current-user
        routes), served as raw ASGI in front of Quart."""
        return [
            *runtime_routes(self),
            *contour_routes(self),
            *oauth_routes(self),
            *admin_routes(self),
        ]

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
        self._build_state()

    def snapshot(self) -> dict[str, Any]:
        """The durable state for `--state-file` (emulator/foundry/persistence.py); has secrets."""
        from . import persistence

        return persistence.snapshot(
            self.identity.directory,
            self.identity.tokens.by_digest,
            self.oauth.grants,
            self.oauth.refresh_tokens,
            self.connectivity.connections,
            self.runtimes,
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
        self.runtimes = runtimes
        self.broker = Broker.build(
            self.runtimes,
            self.seed.compute_modules.limits,
            self.context.clock,
            self.context.randomness,
        )

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
            "computeModules": compute_modules_to_json(self),
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
