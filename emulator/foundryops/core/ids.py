"""Identifiers: the injected id factory for datasets, snapshots, jobs, uploads and requests.

Owns `IdFactory` (the protocol the core takes), `RandomIds` (ULID-shaped ids from the clock and
`secrets`, as the source's `job_01H8X9...` examples look) and `SequentialIds` (predictable ids
for tests). Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Protocol

import attrs

# Crockford's base 32, as ULIDs use it.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class IdFactory(Protocol):
    def new(self, prefix: str) -> str:
        """A fresh id such as `ds_01H8...` for `prefix` "ds"."""
        ...


def _base32(number: int, length: int) -> str:
    """The `length` lowest 5-bit groups of `number`, most significant first."""
    alphabet = _ALPHABET
    return "".join([alphabet[(number >> shift) & 31] for shift in range(5 * length - 5, -5, -5)])


@attrs.define
class RandomIds:
    """`<prefix>_` + a 26-character ULID: 48 bits of milliseconds, 80 random bits."""

    now: Callable[[], float]

    def new(self, prefix: str) -> str:
        millis = int(self.now() * 1000) & ((1 << 48) - 1)
        # 10 characters of time then 16 of randomness: 130 bits, the top two always zero.
        return f"{prefix}_{_base32((millis << 80) | secrets.randbits(80), 26)}"


@attrs.define
class SequentialIds:
    """`<prefix>_000001`, `<prefix>_000002`, ... one counter per prefix (tests)."""

    counters: dict[str, int] = attrs.field(factory=dict)

    def new(self, prefix: str) -> str:
        count = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = count
        return f"{prefix}_{count:06d}"
