"""Injected time and randomness, so tests can control both.

Owns `Clock` (wall-clock seconds since the epoch, as the core's `now` arguments use) and
`Randomness` (tokens and ids from `secrets`). Imports nothing from trio, quart or hypercorn.
"""

from __future__ import annotations

import os
import secrets
import time
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


# Random bytes drawn from the OS at once for ids (`Randomness.uuid`): one system call per
# 256 ids instead of one each.
ID_POOL_BYTES = 4096


class Randomness:
    """Unguessable values. Every token and code has at least 160 bits from `secrets`."""

    def __init__(self) -> None:
        self._pool = b""
        self._taken = 0

    def token(self, prefix: str = "", nbytes: int = 24) -> str:
        return prefix + secrets.token_urlsafe(max(nbytes, 20))

    def hex(self, nbytes: int = 20) -> str:
        return secrets.token_hex(max(nbytes, 20))

    def uuid(self) -> str:
        """A random (version 4) UUID in its canonical lower-case form; 122 random bits from
        the OS as `uuid.uuid4()` has (drawn ahead in a pool, never reused), formatted without
        building a UUID object (Fabric makes 17 of them per job)."""
        taken = self._taken
        if taken + 16 > len(self._pool):
            self._pool, taken = os.urandom(ID_POOL_BYTES), 0
        self._taken = taken + 16
        h = self._pool[taken : taken + 16].hex()
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"
