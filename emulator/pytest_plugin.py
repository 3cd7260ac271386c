"""pytest fixtures for testing applications against the emulator.

Installed with the package and registered through the `pytest11` entry point, so any test
suite that has the emulator installed can use them. The generic fixtures:

- `emulator` (async, for pytest-trio tests): an in-process emulator on 127.0.0.1, every
  listener on a free port, HTTP and HTTPS, for the duration of the test; yields an
  `EmulatorHandle` (`handle.url("fabric")`, `handle.service("foundry")`, ...).
- `emulator_thread` (plain pytest): the same, served from a background thread, for
  `requests`- or SDK-based tests.
- `emulator_seed`: the seed both use. The default seed unless the test has the
  `@pytest.mark.emulator_seed(...)` marker (a dict, a path, or a Seed) or overrides this fixture.
- `emulator_services`: which services run (a tuple of names, or None for every service with a
  block in the seed); set it with `@pytest.mark.emulator_services("fabric", ...)`.
- `emulator_settings`: extra `Settings` fields (a dict), overridable the same way.

The first release's Foundry names stay and behave as before: `foundry_emulator`,
`foundry_emulator_thread`, `foundry_emulator_seed` (marker `foundry_seed`) and
`foundry_emulator_settings`; they run Foundry alone (unless their settings name `services`).
A project's own `conftest.py` fixture of the same name wins over these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from .embedded import EmulatorHandle, SeedLike, open_emulator, run_in_thread


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "emulator_seed(seed): the seed (dict, path or Seed) of the emulator fixtures"
    )
    config.addinivalue_line(
        "markers", "emulator_services(*names): the services the emulator fixtures run"
    )
    config.addinivalue_line(
        "markers",
        "foundry_seed(seed): the seed (dict, path or Seed) for the foundry_emulator fixtures",
    )


def _marker_seed(request: pytest.FixtureRequest, name: str) -> SeedLike:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return None
    seed: SeedLike = marker.args[0]
    return seed


@pytest.fixture
def emulator_seed(request: pytest.FixtureRequest) -> SeedLike:
    return _marker_seed(request, "emulator_seed")


@pytest.fixture
def emulator_services(request: pytest.FixtureRequest) -> tuple[str, ...] | None:
    marker = request.node.get_closest_marker("emulator_services")
    return None if marker is None else tuple(marker.args)


@pytest.fixture
def emulator_settings() -> dict[str, Any]:
    return {}


def _with_services(settings: dict[str, Any], services: tuple[str, ...] | None) -> dict[str, Any]:
    return settings if services is None else {"services": services, **settings}


@pytest.fixture
async def emulator(
    emulator_seed: SeedLike,
    emulator_services: tuple[str, ...] | None,
    emulator_settings: dict[str, Any],
) -> AsyncIterator[EmulatorHandle]:
    settings = _with_services(emulator_settings, emulator_services)
    async with open_emulator(emulator_seed, **settings) as handle:
        yield handle


@pytest.fixture
def emulator_thread(
    emulator_seed: SeedLike,
    emulator_services: tuple[str, ...] | None,
    emulator_settings: dict[str, Any],
) -> Iterator[EmulatorHandle]:
    settings = _with_services(emulator_settings, emulator_services)
    with run_in_thread(emulator_seed, **settings) as handle:
        yield handle


@pytest.fixture
def foundry_emulator_seed(request: pytest.FixtureRequest) -> SeedLike:
    return _marker_seed(request, "foundry_seed")


@pytest.fixture
def foundry_emulator_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
async def foundry_emulator(
    foundry_emulator_seed: SeedLike, foundry_emulator_settings: dict[str, Any]
) -> AsyncIterator[EmulatorHandle]:
    settings = {"services": ("foundry",), **foundry_emulator_settings}
    async with open_emulator(foundry_emulator_seed, **settings) as handle:
        yield handle


@pytest.fixture
def foundry_emulator_thread(
    foundry_emulator_seed: SeedLike, foundry_emulator_settings: dict[str, Any]
) -> Iterator[EmulatorHandle]:
    settings = {"services": ("foundry",), **foundry_emulator_settings}
    with run_in_thread(foundry_emulator_seed, **settings) as handle:
        yield handle
