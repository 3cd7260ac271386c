"""Running an emulator inside another program: `open_emulator` for Trio, `run_in_thread` otherwise.

Owns the `EmulatorHandle` that the programmatic API and the pytest plugin give out: every
service's listener URLs (`handle.url("fabric")`), the CA path, the object graph, and each
service's helpers (`handle.service("foundry")`, which the service's `embedded_handle` hook
builds; `handle.foundry` is the first release's shortcut). Both forms listen on 127.0.0.1 with
every port 0 (free ports) unless told otherwise. Knows services only by name.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from . import services as registry
from .platform.clock import Clock
from .platform.seeds import Seed, default_seed_path, load_seed, seed_from_mapping
from .platform.service import Endpoints
from .platform.settings import Settings
from .web.app import Emulator, build_emulator

SeedLike = Mapping[str, Any] | Path | str | Seed | None


def resolve_seed(seed: SeedLike) -> Seed:
    """A seed from a dict, a path, an already-read Seed, or None for the default seed."""
    if isinstance(seed, Seed):
        return seed
    if seed is None:
        return load_seed(default_seed_path(), registry.registered_services())
    if isinstance(seed, str | Path):
        return load_seed(Path(seed), registry.registered_services())
    return seed_from_mapping(seed, registry.registered_services())


@attrs.define
class EmulatorHandle:
    """A running emulator: where it listens and its state."""

    emulator: Emulator
    endpoints: Endpoints
    # Set when the handle lives in another thread than the emulator's trio loop.
    trio_token: trio.lowlevel.TrioToken | None = None

    @property
    def http_url(self) -> str | None:
        return self.endpoints.http_url

    @property
    def https_url(self) -> str | None:
        return self.endpoints.https_url

    @property
    def base_url(self) -> str:
        return self.endpoints.base_url

    @property
    def ca_path(self) -> Path | None:
        return self.endpoints.ca_path

    def endpoints_of(self, service: str) -> Endpoints:
        """Where `service` listens; KeyError naming the running services if it does not run."""
        sites = self.emulator.sites
        if service not in sites:
            raise KeyError(f"{service!r} is not running (running: {', '.join(sites)})")
        return sites[service].endpoints

    def url(self, service: str, *, tls: bool = False) -> str:
        """The base URL of a service's HTTP (or, with `tls`, HTTPS) listener."""
        endpoints = self.endpoints_of(service)
        url = endpoints.https_url if tls else endpoints.http_url
        if url is None:
            raise KeyError(f"{service} has no {'HTTPS' if tls else 'HTTP'} listener")
        return url

    def service(self, name: str) -> Any:
        """The helpers of a running service (its `ServiceInstance.embedded_handle`)."""
        self.endpoints_of(name)
        return self.emulator.sites[name].instance.embedded_handle(self)

    @property
    def foundry(self) -> Any:
        """Foundry's helpers (`emulator.foundry.embedded.FoundryHandle`): tokens, runtimes."""
        return self.service("foundry")

    def call(self, function: Any, *args: Any) -> Any:
        """Run a synchronous function on the emulator's loop (from its thread or any other)."""
        if self.trio_token is None:
            return function(*args)
        return trio.from_thread.run_sync(function, *args, trio_token=self.trio_token)

    def reset(self) -> None:
        """Every running service back to its seed."""

        def reset_all() -> None:
            for service in self.emulator.services.values():
                service.reset()

        self.call(reset_all)


def _settings(overrides: Mapping[str, Any]) -> Settings:
    values = {"ephemeral_ports": True, "log_level": "warning", **overrides}
    return Settings(**values)


@asynccontextmanager
async def open_emulator(
    seed: SeedLike = None, *, clock: Clock | None = None, **settings: Any
) -> AsyncIterator[EmulatorHandle]:
    """Serve an emulator for the duration of the block (Trio programs and pytest-trio tests).

    `settings` are `emulator.platform.settings.Settings` fields (services, ports, state_dir,
    ...); every port defaults to 0 (any free port).
    """
    from .transport.server import serve

    emulator = build_emulator(_settings(settings), resolve_seed(seed), clock=clock)
    # With `state_file`, start from what an earlier run saved (as `emulator serve` does).
    emulator.restore_state_file()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        endpoints = await nursery.start(
            lambda task_status: serve(emulator, shutdown_trigger=stop.wait, task_status=task_status)
        )
        try:
            yield EmulatorHandle(emulator, endpoints)
        finally:
            stop.set()


@contextmanager
def run_in_thread(
    seed: SeedLike = None, *, clock: Clock | None = None, **settings: Any
) -> Iterator[EmulatorHandle]:
    """Serve an emulator from a background thread (plain pytest, requests, the Foundry SDK)."""
    ready: list[EmulatorHandle] = []
    failure: list[BaseException] = []
    started = threading.Event()
    stop_token: list[tuple[trio.lowlevel.TrioToken, trio.Event]] = []

    async def main() -> None:
        stop = trio.Event()
        async with open_emulator(seed, clock=clock, **settings) as handle:
            handle.trio_token = trio.lowlevel.current_trio_token()
            stop_token.append((handle.trio_token, stop))
            ready.append(handle)
            started.set()
            await stop.wait()

    def thread_main() -> None:
        try:
            trio.run(main)
        except Exception as error:  # reported in the caller's thread below
            failure.append(error)
        finally:
            started.set()

    thread = threading.Thread(target=thread_main, name="emulator", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    try:
        yield ready[0]
    finally:
        token, stop = stop_token[0]
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join()
        if failure:
            raise failure[0]
