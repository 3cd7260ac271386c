"""Shared FoundryOps API fixtures: a running emulator with only the FoundryOps service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from emulator.foundryops.seed import DEFAULT_SEED

API_KEY = "fo_test_key_0001"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def seed_with(**changes: Any) -> dict[str, Any]:
    block = dict(DEFAULT_SEED)
    block.update(changes)
    return {"foundryops": block}


@pytest.fixture
async def fo(start_emulator: Any) -> Any:
    """The FoundryOps service on the default block; `fo.client()` talks to its HTTP listener."""
    return await start_emulator(seed_with(), services=("foundryops",))


def client(running: Any, **kwargs: Any) -> httpx.AsyncClient:
    headers: Mapping[str, str] = kwargs.pop("headers", AUTH)
    return running.client(service="foundryops", headers=dict(headers), **kwargs)
