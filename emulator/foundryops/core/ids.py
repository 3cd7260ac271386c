"""Identifiers: the injected id factory for datasets, snapshots, jobs, uploads and requests.

Owns `IdFactory` (the protocol the core takes), `RandomIds` (ULID-shaped ids from the clock and
`secrets`, as the source's `job_01H8X9...` examples look) and `SequentialIds` (predictable ids
for tests). Both take `reserve(ids)`: ids restored from a state file that they must never hand
out again. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Protocol

import attrs

# Crockford's base 32, as ULIDs use it.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class IdFactory(Protocol):
    def new(self, prefix: str) -> str:
        """A fresh id such as `ds_01H8...` for `prefix` "ds"."""
        ...

    def reserve(self, ids: Iterable[str]) -> None:
        """Never hand out any of `ids` (they were restored from a state file)."""
        ...


def _base32(number: int, length: int) -> str:
    """The `length` lowest 5-bit groups of `number`, most significant first."""
    alphabet = _ALPHABET
    return "".join([alphabet[(number >> shift) & 31] for shift in range(5 * length - 5, -5, -5)])


@attrs.define
class RandomIds:
    """`<prefix>_` + a 26-character ULID: 48 bits of milliseconds, 80 random bits."""

    now: Callable[[], float]
    # Restored ids. 80 random bits make a repeat all but impossible, but the clock is
    # injected (a test clock may stand still or go back), so a restored id is checked, not
    # trusted to chance.
    _taken: set[str] = attrs.field(factory=set, init=False)

    def new(self, prefix: str) -> str:
        while True:
            millis = int(self.now() * 1000) & ((1 << 48) - 1)
            # 10 characters of time then 16 of randomness: 130 bits, the top two always zero.
            made = f"{prefix}_{_base32((millis << 80) | secrets.randbits(80), 26)}"
            if made not in self._taken:
                return made

    def reserve(self, ids: Iterable[str]) -> None:
        self._taken.update(ids)


@attrs.define
class SequentialIds:
    """`<prefix>_000001`, `<prefix>_000002`, ... one counter per prefix (tests)."""

    counters: dict[str, int] = attrs.field(factory=dict)

    def new(self, prefix: str) -> str:
        count = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = count
        return f"{prefix}_{count:06d}"

    def reserve(self, ids: Iterable[str]) -> None:
        """Move each prefix's counter past the restored ids of this shape."""
        for taken in ids:
            prefix, _, number = taken.rpartition("_")
            if prefix and number.isdigit():
                self.counters[prefix] = max(self.counters.get(prefix, 0), int(number))
