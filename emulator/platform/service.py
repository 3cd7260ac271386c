"""The contract between the generic server and an emulated service (Foundry today, more later).

Owns `Service` (reads its seed block, starts an instance), `ServiceInstance` (routes, error
families, banner, background work, reset, shutdown) and `ServiceContext` (what the server gives
every service: settings, clock, randomness and the listener endpoints). A new emulated API is a
new package beside `emulator/foundry/` that provides a `Service`; nothing generic changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio
from quart import Blueprint

from .clock import Clock, Randomness
from .errors import ErrorFamily
from .seedschema import Node, TokenSeed
from .settings import Settings


@attrs.define
class Endpoints:
    """Where the emulator listens; filled in by the server once the sockets are bound."""

    http_url: str | None = None
    https_url: str | None = None
    base_url: str = "http://127.0.0.1:4000"
    ca_path: Path | None = None
    # The host name a module should use to reach the HTTPS listener (covered by the certificate).
    runtime_host: str = "localhost"
    https_port: int | None = None


@attrs.frozen
class ServiceContext:
    settings: Settings
    clock: Clock
    randomness: Randomness
    endpoints: Endpoints


class ServiceInstance(Protocol):
    """A running service: its state, routes and background work."""

    def blueprints(self) -> Sequence[Blueprint]: ...

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        """Path prefixes and the error family that answers under each."""
        ...

    def banner_lines(self) -> list[str]: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (expiry sweeps and the like); cancelled when the server stops."""
        ...

    def begin_shutdown(self) -> None:
        """Answer every waiting request now (the server is about to stop)."""
        ...

    def reset(self) -> None:
        """Back to the seed, answering every waiting request."""
        ...

    def describe(self) -> dict[str, Any]:
        """A secret-free summary of the state, for `/_emulate/state` and the health page."""
        ...

    # Optional (looked up with getattr, so a service may leave it out):
    #
    #     def asgi_routes(self) -> Sequence[emulator.rawasgi.RawRoute]:
    #         """Hot routes served as raw ASGI in front of the Quart app (emulator.web.rawasgi)."""
    #
    #     def snapshot(self) -> dict[str, Any]:
    #         """The durable state as JSON-ready data, for `--state-file` (emulator/statefile.py).
    #         May hold secrets: the file is written with mode 0600."""
    #
    #     def restore(self, data: dict[str, Any]) -> None:
    #         """Take back what `snapshot` returned (called before serving). Validate all of it
    #         first, then replace state: on bad data raise ValueError and change nothing."""


class Service(Protocol):
    """A kind of emulated API, keyed by its top-level seed block (`foundry:`)."""

    key: str

    def read_seed(self, node: Node | None, tokens: tuple[TokenSeed, ...]) -> Any:
        """Check and convert the seed block (None when the seed has no such block)."""
        ...

    def start(self, seed: Any, context: ServiceContext) -> ServiceInstance: ...
