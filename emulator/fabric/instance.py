"""The running Fabric service: `FabricInstance` builds the control plane and engine from the
`fabric:` seed block and gives the platform the route table, the envelope error family,
background work, readiness, reset, shutdown and the banner.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from ..platform.errors import ErrorFamily
from ..platform.service import ServiceContext, ServiceInstance
from ..web.rawasgi import RawRoute, with_automatic_methods
from . import persistence
from .api import inspector
from .api.errors import EnvelopeFamily
from .api.routes import FabricApi, Route, to_raw_routes
from .api.table import all_routes
from .api.websocket import websocket_routes
from .assetfiles import AssetFiles
from .core.plane import ControlPlane
from .core.tenancy import DEFAULT_ORG_ID
from .engine import Engine
from .seed import FabricSeed, populate


class FabricInstance(ServiceInstance):
    """The running Fabric control plane."""

    # Query names that may carry an API key or a JWT if a caller puts one in a URL.
    secret_names = frozenset({"api_key", "apikey", "key", "raw_key", "jwt", "authorization"})

    def __init__(self, seed: FabricSeed, context: ServiceContext) -> None:
        self.seed = seed
        self.context = context
        randomness = context.randomness
        self.default_family = EnvelopeFamily("fabric", context.clock, randomness.uuid)
        self.plane = ControlPlane(
            clock=context.clock,
            new_id=randomness.uuid,
            random_text=_random_text,
            random=_random_float,
            catalog=seed.catalog,
            config=seed.plane,
        )
        populate(self.plane, seed)
        self.engine = Engine(self.plane, seed.engine)
        # With --state-file, uploaded bytes go to a directory beside it (assetfiles.py).
        state_file = context.settings.state_file
        self.asset_files = None if state_file is None else AssetFiles.beside(Path(state_file))
        self.api = FabricApi(
            self.plane,
            self.engine,
            context.clock,
            randomness.uuid,
            keepalive_seconds=seed.keepalive_seconds,
            asset_files=self.asset_files,
        )
        self.routes: list[Route] = all_routes(self.api)

    # ServiceInstance --------------------------------------------------------------------------

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        # The inspector's overview answers in the envelope like every Fabric route, not in the
        # platform's family of the other /_emulate routes.
        return (("/_emulate/fabric", self.default_family),)

    def raw_routes(self) -> Sequence[RawRoute]:
        # HEAD answered by the GET handlers and OPTIONS with Allow, as Quart routes do.
        return [
            *with_automatic_methods(to_raw_routes(self.api, self.routes)),
            *websocket_routes(self.api),
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.engine.run)
                self.api.ready = True
                task_status.started()
        finally:
            self.api.ready = False

    def begin_shutdown(self) -> None:
        self.api.ready = False
        self.engine.executor.cancel_all()
        self.engine.hub.close_all()

    def reset(self) -> None:
        self.engine.executor.cancel_all()
        self.engine.hub.close_all()
        self.plane.reset()
        populate(self.plane, self.seed)

    def snapshot(self) -> dict[str, Any] | None:
        """Tenants, API keys (hashes only), definitions, jobs, runs, the event, usage and
        audit logs, and asset metadata (bytes beside the file); see persistence.py."""
        stored = frozenset() if self.asset_files is None else frozenset(self.asset_files.kept)
        return persistence.snapshot(self.plane, stored)

    def capture(self) -> Callable[[], dict[str, Any]]:
        """What may still change, now; finished jobs and runs and the logs, off the loop."""
        stored = frozenset() if self.asset_files is None else frozenset(self.asset_files.kept)
        return persistence.capture(self.plane, stored, lazy=True)

    def restore(self, data: dict[str, Any]) -> None:
        persistence.restore(self.plane, data, self.asset_files)

    def inspector_page(self) -> bytes | None:
        return inspector.inspector_page()

    def describe(self) -> dict[str, Any]:
        plane = self.plane
        return {
            "organizations": len(plane.tenancy.organizations),
            "apiKeys": len(plane.keys.by_id),
            "jobs": len(plane.jobs),
            "workflowDefinitions": len(plane.definitions),
            "workflowRuns": len(plane.runs),
            "events": plane.events.last_sequence,
            "assets": len(plane.assets.assets),
            "assetBytes": plane.assets.total_bytes,
            "executor": self.engine.executor.statistics(),
            "subscribers": self.engine.hub.statistics(),
            "production": plane.config.production,
        }

    def banner_lines(self) -> list[str]:
        base = self.context.endpoints.http_url or self.context.endpoints.base_url
        lines = [f"Fabric:        control plane (default org {DEFAULT_ORG_ID})"]
        if self.seed.production:
            lines.append("Fabric auth:   production mode (X-Principal-Id is ignored)")
        else:
            lines.append("Fabric auth:   dev mode: any X-Principal-Id UUID is accepted")
        for org in self.seed.organizations:
            for key in org.api_keys:
                scopes = " ".join(key.scopes) or "full access"
                lines.append(
                    f"Fabric key:    {key.name} ({key.key[:12]}...) in {org.slug} [{scopes}]"
                )
        for provider in self.seed.catalog.providers:
            lines.append(
                f"Provider:      {provider.provider_id} ({', '.join(provider.modalities)}; "
                f"tier {provider.tier})"
            )
        lines.append(
            "Quick start:   curl -H 'X-Principal-Id: 00000000-0000-4000-8000-000000000001' "
            f"{base}/v1/me"
        )
        return lines


def _random_text(length: int, alphabet: str) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _random_float() -> float:
    # Scripted providers' latency and failure draws; not a secret.
    return random.random()
