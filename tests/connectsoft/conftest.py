"""Fixtures of the ConnectSoft tests; the builders they use are in connectsoft_builders.py."""

from __future__ import annotations

import pytest
from connectsoft_builders import make_state

from emulator.connectsoft.core.state import RuntimeState


@pytest.fixture
def state() -> RuntimeState:
    return make_state()
