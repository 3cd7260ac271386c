"""Injected time and randomness, so tests can control both.

Owns `Clock` (wall-clock seconds since the epoch, as the core's `now` arguments use) and
`Randomness` (tokens and ids from `secrets`). Imports nothing from trio, quart or hypercorn.
"""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Protocol

import attrs


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


@attrs.define
class ManualClock:
    """A clock that moves only when told to (tests)."""

    current: float = 1_800_000_000.0

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


class Randomness:
    """Unguessable values. Every token and code has at least 160 bits from `secrets`."""

    def token(self, prefix: str = "", nbytes: int = 24) -> str:
        return prefix + secrets.token_urlsafe(max(nbytes, 20))

    def hex(self, nbytes: int = 20) -> str:
        return secrets.token_hex(max(nbytes, 20))

    def uuid(self) -> str:
        return str(uuid.uuid4())
