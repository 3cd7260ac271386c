"""The Foundry service: builds the Foundry state from its seed block and mounts its blueprints.

Owns the `FoundryService` (seed reading, start) and `FoundryInstance` (the state of every
Foundry area, its routes, its banner lines, reset and shutdown). Each area keeps its own core
state and blueprint; this module only wires them together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
from quart import Blueprint

from ..errors import ErrorFamily
from ..seedschema import Node, TokenSeed
from ..service import ServiceContext
from .api import errors as api_errors
from .api.auth import BearerAuth
from .core.identity import Identity
from .seed import FoundrySeed


class FoundryService:
    key = "foundry"

    def read_seed(self, node: Node | None, tokens: tuple[TokenSeed, ...]) -> FoundrySeed:
        return FoundrySeed.from_node(node, tokens)

    def start(self, seed: Any, context: ServiceContext) -> FoundryInstance:
        if not isinstance(seed, FoundrySeed):
            seed = FoundrySeed.from_node(None, ())
        return FoundryInstance(seed, context)


class FoundryInstance:
    """The running Foundry service."""

    def __init__(self, seed: FoundrySeed, context: ServiceContext) -> None:
        self.seed = seed
        self.context = context
        self._build_state()

    def _build_state(self) -> None:
        """(Re)create every area's state from the seed."""
        now = self.context.clock.now()
        self.identity = Identity.from_seed(self.seed, now)
        self.auth = BearerAuth(self.identity, self.context.clock)

    # ServiceInstance --------------------------------------------------------------------------

    def blueprints(self) -> Sequence[Blueprint]:
        return []

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        return api_errors.PREFIXES

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def begin_shutdown(self) -> None:
        pass

    def reset(self) -> None:
        self._build_state()

    def describe(self) -> dict[str, Any]:
        return {
            "users": len(self.identity.directory.principals),
            "tokens": self.identity.tokens.count(),
        }

    def banner_lines(self) -> list[str]:
        seed = self.seed
        endpoints = self.context.endpoints
        lines = []
        humans = [u for u in seed.users if u.principal_type == "human" and u.active]
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
        admin_token = next(
            (t for t in seed.tokens if "api:admin-read" in t.scopes), None
        )
        if admin_token is not None:
            lines.append("Quick start:")
            lines.append(
                f"  curl -H 'Authorization: Bearer {admin_token.token}' "
                f"{endpoints.base_url}/api/v2/admin/users/getCurrent"
            )
        return lines
