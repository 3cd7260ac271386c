"""Idempotency keys: the same key and body replay the first answer, another body is refused.

Owns `Fingerprint` (method, path and a SHA-256 of the raw body), `StoredResponse` and
`IdempotencyStore`, keyed by (API key id, Idempotency-Key or X-Idempotency-Key). `begin` answers
a replay, starts a new entry, or raises 409 IDEMPOTENCY_KEY_REUSED (other request) or
IDEMPOTENCY_IN_PROGRESS (the first one has not answered yet). Entries live 24 hours and at most
`capacity` are kept (the oldest go first). Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import attrs

from .errors import Conflict, InvalidRequest

TTL_SECONDS = 24 * 3600.0
MAX_KEY_LENGTH = 255


@attrs.frozen
class Fingerprint:
    method: str
    path: str
    body_sha256: str

    @classmethod
    def of(cls, method: str, path: str, body: bytes) -> Fingerprint:
        return cls(method.upper(), path, hashlib.sha256(body).hexdigest())


@attrs.frozen
class StoredResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]


@attrs.define
class _Entry:
    fingerprint: Fingerprint
    created_at: float
    response: StoredResponse | None = None


@attrs.define
class IdempotencyStore:
    capacity: int = 10_000
    entries: OrderedDict[tuple[str, str], _Entry] = attrs.field(factory=OrderedDict)

    def begin(
        self, key_id: str, idempotency_key: str, fingerprint: Fingerprint, now: float
    ) -> StoredResponse | None:
        """The stored answer to replay, or None when this request is the first (now reserved)."""
        if not idempotency_key or len(idempotency_key) > MAX_KEY_LENGTH:
            raise InvalidRequest(
                "INVALID_REQUEST",
                f"An idempotency key must be 1 to {MAX_KEY_LENGTH} characters.",
                {"field": "Idempotency-Key"},
            )
        self.expire(now)
        entry = self.entries.get((key_id, idempotency_key))
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise Conflict(
                    "IDEMPOTENCY_KEY_REUSED",
                    "This idempotency key was used with a different request; use a new key.",
                    {"idempotency_key": idempotency_key},
                )
            if entry.response is None:
                raise Conflict(
                    "IDEMPOTENCY_IN_PROGRESS",
                    "The first request with this idempotency key has not finished; retry.",
                    {"idempotency_key": idempotency_key},
                )
            return entry.response
        self.entries[(key_id, idempotency_key)] = _Entry(fingerprint, now)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return None

    def finish(self, key_id: str, idempotency_key: str, response: StoredResponse) -> None:
        entry = self.entries.get((key_id, idempotency_key))
        if entry is not None and entry.response is None:
            entry.response = response

    def abandon(self, key_id: str, idempotency_key: str) -> None:
        """Release a reservation whose answer must not be replayed (429, 5xx)."""
        entry = self.entries.get((key_id, idempotency_key))
        if entry is not None and entry.response is None:
            del self.entries[(key_id, idempotency_key)]

    def expire(self, now: float) -> None:
        while self.entries:
            first_key = next(iter(self.entries))
            if now - self.entries[first_key].created_at < TTL_SECONDS:
                break
            del self.entries[first_key]
