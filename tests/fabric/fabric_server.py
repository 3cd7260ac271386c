"""Start a real emulator serving the Fabric service on 127.0.0.1 port 0 (HTTP and HTTPS)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from emulator.fabric.instance import FabricInstance
from emulator.platform.seeds import seed_from_mapping
from emulator.platform.service import Endpoints
from emulator.platform.settings import Settings
from emulator.services import registered_services
from emulator.transport.server import serve
from emulator.web.app import build_emulator

ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"
CAROL = "33333333-3333-4333-8333-333333333333"
FULL_KEY = "fab_FullAccessKeyForTestsAAAAAAAAAAAA"
READ_KEY = "fab_ReadOnlyJobsKeyForTestsBBBBBBBBBB"
JWT_SECRET = "jwt-secret-for-the-fabric-tests-32+"

SEED: dict[str, Any] = {
    "fabric": {
        "jwt_secret": JWT_SECRET,
        "organizations": [
            {
                "slug": "acme",
                "id": "aaaaaaaa-0000-4000-8000-000000000001",
                "members": [
                    {"principal_id": ALICE, "role": "owner"},
                    {"principal_id": BOB, "role": "viewer"},
                    {"principal_id": CAROL, "role": "member"},
                ],
                "api_keys": [
                    {"name": "full", "key": FULL_KEY, "principal_id": ALICE},
                    {
                        "name": "jobs-read",
                        "key": READ_KEY,
                        "principal_id": ALICE,
                        "scopes": ["jobs:read"],
                    },
                ],
            }
        ],
        "events": {"keepalive_seconds": 15},
    }
}
ACME = "aaaaaaaa-0000-4000-8000-000000000001"


@attrs.define
class FabricServer:
    endpoints: Endpoints
    instance: FabricInstance
    # Setting it stops the server gracefully (the test's nursery stops it anyway at the end).
    shutdown: trio.Event
    # The URL a test talks to (HTTP or HTTPS), chosen by the test.
    base: str = ""

    @property
    def http_url(self) -> str:
        assert self.endpoints.http_url is not None
        return self.endpoints.http_url

    @property
    def https_url(self) -> str:
        assert self.endpoints.https_url is not None
        return self.endpoints.https_url

    def ssl_context(self) -> ssl.SSLContext:
        assert self.endpoints.ca_path is not None
        return ssl.create_default_context(cafile=str(self.endpoints.ca_path))


async def start_fabric(
    nursery: trio.Nursery, state_dir: Path, seed: Mapping[str, Any] | None = None, **settings: Any
) -> FabricServer:
    settings.setdefault("ephemeral_ports", True)
    settings.setdefault("services", ("fabric",))
    settings.setdefault("state_dir", state_dir)
    settings.setdefault("graceful_timeout", 2.0)
    services = registered_services()
    emulator = build_emulator(Settings(**settings), seed_from_mapping(seed or SEED, services))
    shutdown = trio.Event()
    await nursery.start(partial(serve, emulator, shutdown_trigger=shutdown.wait))
    site = emulator.sites["fabric"]
    assert isinstance(site.instance, FabricInstance)
    return FabricServer(site.endpoints, site.instance, shutdown)
