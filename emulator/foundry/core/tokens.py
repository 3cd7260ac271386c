"""Bearer tokens: issuing, authenticating, expiring and revoking access tokens.

Owns the access-token table. Tokens are stored under the SHA-256 of their value, so a lookup
compares digests (constant time) and the table never holds a usable token. Seeded tokens (the
`tokens:` block) work with exactly the scopes the seed gives them. There is no fallback
principal: an unknown token never authenticates.

Issued tokens are bounded: at most `MAX_ISSUED_TOKENS` (about 0.5 KiB each, so about 25 MiB)
are kept. Past it, the table first forgets every expired token, then the oldest issued ones
(seeded tokens are never forgotten), down to nine tenths of the bound so the work is done once
per many issues. A forgotten token answers 401 like an expired one, and the client asks for a
new one, as it would at expiry. Without the bound a long load test with client credentials
grew memory without end (issue 16, defect 12).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import attrs

from ...platform.clock import Randomness
from ..seed import TokenSeed
from .errors import AuthenticationError

ACCESS_TOKEN_PREFIX = "foundry_"
MAX_ISSUED_TOKENS = 50_000


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets of any length."""
    return hmac.compare_digest(digest(given), digest(expected))


@attrs.define
class AccessToken:
    username: str
    scopes: frozenset[str]
    client_id: str | None
    issued_at: float
    # None: never expires (seeded tokens without expires_in).
    expires_at: float | None
    origin: str  # "seed", "authorization_code", "refresh_token", "client_credentials"
    revoked: bool = False
    # The OAuth grant (core/oauth.py) the token was issued under; revoking the grant revokes it.
    grant_id: str | None = None

    def revoke(self) -> None:
        """Stop the token working at once (it is never un-revoked)."""
        self.revoked = True

    def expires_in(self, now: float) -> int | None:
        return None if self.expires_at is None else max(0, int(self.expires_at - now))


@attrs.define
class TokenStore:
    by_digest: dict[bytes, AccessToken] = attrs.field(factory=dict)
    # The most issued (not seeded) tokens kept; see the module docstring.
    capacity: int = MAX_ISSUED_TOKENS
    # How many seeded tokens the table holds (counted when seeding and when shrinking).
    seeded: int = 0

    def add_seeded(self, seeds: Iterable[TokenSeed], now: float) -> None:
        for seed in seeds:
            self.by_digest[digest(seed.token)] = AccessToken(
                username=seed.username,
                scopes=frozenset(seed.scopes),
                client_id=None,
                issued_at=now,
                expires_at=None if seed.expires_in is None else now + seed.expires_in,
                origin="seed",
            )
        self.seeded = sum(1 for record in self.by_digest.values() if record.origin == "seed")

    def issue(
        self,
        randomness: Randomness,
        *,
        username: str,
        scopes: Iterable[str],
        client_id: str | None,
        ttl: int,
        now: float,
        origin: str,
        grant_id: str | None = None,
    ) -> tuple[str, AccessToken]:
        """A new access token; returns the token value (shown once) and its record."""
        value = randomness.token(ACCESS_TOKEN_PREFIX, 30)
        record = AccessToken(
            username=username,
            scopes=frozenset(scopes),
            client_id=client_id,
            issued_at=now,
            expires_at=now + ttl,
            origin=origin,
            grant_id=grant_id,
        )
        self.by_digest[digest(value)] = record
        if len(self.by_digest) - self.seeded > self.capacity:
            self._shrink(now)
        return value, record

    def _shrink(self, now: float) -> None:
        """Forget expired tokens, then the oldest issued ones, down to 9/10 of `capacity`."""
        self.sweep(now, grace=0.0)
        # Counted again here: a restored state file adds tokens of both kinds.
        self.seeded = sum(1 for record in self.by_digest.values() if record.origin == "seed")
        excess = len(self.by_digest) - self.seeded - self.capacity * 9 // 10
        if excess <= 0:
            return
        oldest = []
        for key, record in self.by_digest.items():
            if record.origin != "seed":
                oldest.append(key)
                if len(oldest) == excess:
                    break
        for key in oldest:
            del self.by_digest[key]

    def authenticate(self, token: str | None, now: float) -> AccessToken:
        if not token:
            raise AuthenticationError("missing_token", "No bearer token was given.")
        record = self.by_digest.get(digest(token))
        if record is None:
            raise AuthenticationError("invalid_token", "The bearer token is not known.")
        if record.revoked:
            raise AuthenticationError("invalid_token", "The bearer token has been revoked.")
        if record.expires_at is not None and now >= record.expires_at:
            raise AuthenticationError("invalid_token", "The bearer token has expired.")
        return record

    def revoke(self, token: str) -> AccessToken | None:
        record = self.by_digest.get(digest(token))
        if record is not None:
            record.revoke()
        return record

    def sweep(self, now: float, grace: float = 3600.0) -> int:
        """Forget tokens that expired more than `grace` seconds ago; returns how many."""
        stale = [
            key
            for key, record in self.by_digest.items()
            if record.expires_at is not None and record.expires_at + grace < now
        ]
        for key in stale:
            del self.by_digest[key]
        return len(stale)

    def count(self) -> int:
        return len(self.by_digest)
