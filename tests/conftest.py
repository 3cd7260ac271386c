"""Shared test harness: a real emulator on 127.0.0.1 port 0 (HTTP and HTTPS) in the test nursery."""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from emulator.platform.clock import Clock
from emulator.platform.seeds import Seed, default_seed_path, load_seed, seed_from_mapping
from emulator.platform.service import Endpoints
from emulator.platform.settings import Settings
from emulator.services import registered_services
from emulator.transport.server import serve
from emulator.web.app import Emulator, build_emulator

# This machine exports SSL_CERT_FILE/REQUESTS_CA_BUNDLE globally; tests set them explicitly.
for _name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
    os.environ.pop(_name, None)


@attrs.define
class Running:
    emulator: Emulator
    endpoints: Endpoints
    cancel_scope: trio.CancelScope
    shutdown: trio.Event

    @property
    def http_url(self) -> str:
        assert self.endpoints.http_url is not None
        return self.endpoints.http_url

    @property
    def https_url(self) -> str:
        assert self.endpoints.https_url is not None
        return self.endpoints.https_url

    @property
    def ca_path(self) -> Path:
        assert self.endpoints.ca_path is not None
        return self.endpoints.ca_path

    @property
    def foundry(self) -> Any:
        return self.emulator.services["foundry"]

    def url(self, service: str, *, tls: bool = False) -> str:
        """The base URL of a running service's HTTP (or HTTPS) listener."""
        endpoints = self.emulator.sites[service].endpoints
        url = endpoints.https_url if tls else endpoints.http_url
        assert url is not None
        return url

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_path))

    def client(
        self, *, tls: bool = False, http2: bool = False, service: str | None = None, **kwargs: Any
    ) -> httpx.AsyncClient:
        """An httpx client for one listener of `service` (default: the primary service); http2
        without TLS means h2c with prior knowledge."""
        kwargs.setdefault("timeout", 30.0)
        name = service or self.emulator.primary.name
        if tls:
            return httpx.AsyncClient(
                base_url=self.url(name, tls=True), verify=self.ssl_context(), http2=http2, **kwargs
            )
        return httpx.AsyncClient(base_url=self.url(name), http1=not http2, http2=http2, **kwargs)


StartEmulator = Callable[..., Awaitable[Running]]


def make_seed(seed: Mapping[str, Any] | Path | None) -> Seed:
    if seed is None:
        return load_seed(default_seed_path(), registered_services())
    if isinstance(seed, Path):
        return load_seed(seed, registered_services())
    return seed_from_mapping(seed, registered_services())


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the whole session (generating it is the slow part of starting)."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture
async def start_emulator(nursery: trio.Nursery, state_dir: Path) -> StartEmulator:
    """Start emulators on port 0 inside the test; each stops when the test ends."""

    async def start(
        seed: Mapping[str, Any] | Path | None = None,
        *,
        clock: Clock | None = None,
        **settings: Any,
    ) -> Running:
        settings.setdefault("ephemeral_ports", True)
        settings.setdefault("state_dir", state_dir)
        settings.setdefault("graceful_timeout", 2.0)
        emulator = build_emulator(Settings(**settings), make_seed(seed), clock=clock)
        shutdown = trio.Event()

        async def run(task_status: trio.TaskStatus[tuple[trio.CancelScope, Endpoints]]) -> None:
            with trio.CancelScope() as scope:
                await serve(
                    emulator,
                    shutdown_trigger=shutdown.wait,
                    task_status=_Forward(task_status, scope),
                )

        cancel_scope, endpoints = await nursery.start(run)
        return Running(emulator, endpoints, cancel_scope, shutdown)

    return start


@attrs.frozen
class _Forward:
    """Pass serve()'s endpoints up together with the cancel scope that stops it."""

    inner: Any
    scope: trio.CancelScope

    def started(self, value: Endpoints) -> None:
        self.inner.started((self.scope, value))


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> Running:
    """The emulator on the default seed."""
    return await start_emulator()
