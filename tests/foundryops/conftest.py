"""Fixtures of the FoundryOps tests; the helpers they use are in foundryops_support.py."""

from __future__ import annotations

from typing import Any

import pytest
from foundryops_support import seed_with


@pytest.fixture
async def fo(start_emulator: Any) -> Any:
    """The FoundryOps service alone, on the built-in seed block, on free ports."""
    return await start_emulator(seed_with(), services=("foundryops",))
