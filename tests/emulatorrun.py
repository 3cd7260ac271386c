"""Starting the emulator inside a test (a helper module, not a test): `Running`, the handle a
started emulator gives a test, `StartEmulator`, the type of the `start_emulator` fixture, and
`make_seed`. The fixtures themselves are in conftest.py.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from emulator.platform.seeds import Seed, default_seed_path, load_seed, seed_from_mapping
from emulator.platform.service import Endpoints
from emulator.services import registered_services
from emulator.web.app import Emulator

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


@attrs.frozen
class _Forward:
    """Pass serve()'s endpoints up together with the cancel scope that stops it."""

    inner: Any
    scope: trio.CancelScope

    def started(self, value: Endpoints) -> None:
        self.inner.started((self.scope, value))
