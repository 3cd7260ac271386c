"""API keys, scopes, tiers and their limits: who is calling and what they may do.

Owns `TierLimits` (requests per minute, burst, concurrent jobs, queued jobs), `ApiKey` (an id,
the secret, scopes, tier, organization) and `KeyRing.authenticate`, the one place a bearer token
becomes a key (UNAUTHORIZED otherwise), plus `require_scope` (FORBIDDEN). Secrets are compared
in constant time and never appear in errors. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import hashlib

import attrs

from .errors import Forbidden, Unauthorized

SCOPES = ("datasets", "jobs", "webhooks")


@attrs.frozen
class TierLimits:
    name: str
    requests_per_minute: int
    burst: int
    max_concurrent_jobs: int
    max_queued_jobs: int


# The source names tiers without numbers; these are the emulator's defaults (seed overrides).
DEFAULT_TIERS: dict[str, TierLimits] = {
    tier.name: tier
    for tier in (
        TierLimits("free", 60, 10, 1, 2),
        TierLimits("starter", 600, 60, 2, 8),
        TierLimits("growth", 3000, 300, 4, 16),
        TierLimits("enterprise", 60000, 6000, 16, 64),
    )
}


@attrs.frozen
class ApiKey:
    key_id: str
    secret: str = attrs.field(repr=False)
    scopes: frozenset[str]
    tier: str
    org: str | None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@attrs.define
class KeyRing:
    keys: dict[bytes, ApiKey] = attrs.field(factory=dict)

    @classmethod
    def of(cls, keys: list[ApiKey]) -> KeyRing:
        return cls({_digest(key.secret): key for key in keys})

    def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            raise Unauthorized(
                "UNAUTHORIZED", "Missing Authorization header: send 'Authorization: Bearer <key>'."
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized(
                "UNAUTHORIZED", "The Authorization header must be 'Bearer <API key>'."
            )
        # Looked up by the token's digest, never by the secret itself: equal digests mean the
        # same secret, and comparing digests tells a timing attacker nothing about a secret.
        key = self.keys.get(_digest(token.strip()))
        if key is None:
            raise Unauthorized("UNAUTHORIZED", "The API key is not valid.")
        return key


def require_scope(key: ApiKey, scope: str) -> None:
    if scope not in key.scopes:
        raise Forbidden(
            "FORBIDDEN",
            f"The API key lacks the '{scope}' scope this operation needs.",
            {"required_scope": scope, "key_id": key.key_id},
        )
