"""pytest fixtures for testing applications against foundry-emulator.

Installed with the package and registered through the `pytest11` entry point, so any test
suite that has foundry-emulator installed can use them:

- `foundry_emulator` (async, for pytest-trio tests): an in-process emulator on 127.0.0.1
  port 0, HTTP and HTTPS, for the duration of the test; yields an `EmulatorHandle`.
- `foundry_emulator_thread` (plain pytest): the same, served from a background thread, for
  `requests`- or foundry-platform-sdk-based tests.
- `foundry_emulator_seed`: the seed both use. The default seed unless the test has the
  `@pytest.mark.foundry_seed(...)` marker (a dict, a path, or a Seed) or overrides this fixture.
- `foundry_emulator_settings`: extra `Settings` fields (a dict), overridable the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from .embedded import EmulatorHandle, SeedLike, open_emulator, run_in_thread


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "foundry_seed(seed): the seed (dict, path or Seed) for the foundry_emulator fixtures",
    )


@pytest.fixture
def foundry_emulator_seed(request: pytest.FixtureRequest) -> SeedLike:
    marker = request.node.get_closest_marker("foundry_seed")
    if marker is None:
        return None
    seed: SeedLike = marker.args[0]
    return seed


@pytest.fixture
def foundry_emulator_settings() -> dict[str, Any]:
    return {}


@pytest.fixture
async def foundry_emulator(
    foundry_emulator_seed: SeedLike, foundry_emulator_settings: dict[str, Any]
) -> AsyncIterator[EmulatorHandle]:
    async with open_emulator(foundry_emulator_seed, **foundry_emulator_settings) as handle:
        yield handle


@pytest.fixture
def foundry_emulator_thread(
    foundry_emulator_seed: SeedLike, foundry_emulator_settings: dict[str, Any]
) -> Iterator[EmulatorHandle]:
    with run_in_thread(foundry_emulator_seed, **foundry_emulator_settings) as handle:
        yield handle
