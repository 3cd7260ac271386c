"""Shared test harness: a real emulator on 127.0.0.1 port 0 (HTTP and HTTPS) in the test nursery."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
from emulatorrun import Running, StartEmulator, _Forward, make_seed

from emulator.platform.clock import Clock
from emulator.platform.service import Endpoints
from emulator.platform.settings import Settings
from emulator.transport.server import serve
from emulator.web.app import build_emulator

# This machine exports SSL_CERT_FILE/REQUESTS_CA_BUNDLE globally; tests set them explicitly.
for _name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
    os.environ.pop(_name, None)


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
        if seed is None:
            # The default seed has a block for every service; the Foundry tests written
            # against it run Foundry alone unless they name other services.
            settings.setdefault("services", ("foundry",))
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


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> Running:
    """The emulator on the default seed."""
    return await start_emulator()
