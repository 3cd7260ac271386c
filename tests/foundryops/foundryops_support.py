"""Helpers of the FoundryOps tests: the development key, seeds and an HTTP client.

The fixtures that use them are in conftest.py (two conftest modules cannot both be imported as
`conftest`, so helpers live here under a unique name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from emulator.foundryops.seed import DEFAULT_SEED

API_KEY = "fo_test_key_0001"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def seed_with(**changes: Any) -> dict[str, Any]:
    """The built-in FoundryOps block with some top-level keys replaced."""
    block = dict(DEFAULT_SEED)
    block.update(changes)
    return {"foundryops": block}


def client(running: Any, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client for the FoundryOps HTTP listener, sending the development key."""
    headers: Mapping[str, str] = kwargs.pop("headers", AUTH)
    return running.client(service="foundryops", headers=dict(headers), **kwargs)
