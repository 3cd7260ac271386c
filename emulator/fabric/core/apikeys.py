"""API keys: creation (the raw key leaves once), prefix lookup, hash verification, scopes.

Owns `Scope`, `ApiKey` (only the SHA-256 of the raw key is kept), the key state machine
(`KEY_TRANSITIONS` + `apply_key`: active -> disabled, active|disabled -> revoked) and `KeyRing`.
Raw keys are `fab_` + 32 base62 characters; the first 12 characters are the prefix index.
Randomness comes in as `random_text` so tests control it. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import string
from collections.abc import Callable

import attrs

from ...platform.statemachine import Transitions
from .errors import NotFound, Unauthorized, ValidationFailed, transition

KEY_PREFIX = "fab_"
PREFIX_LENGTH = 12
RAW_LENGTH = 32
BASE62 = string.digits + string.ascii_letters


class Scope(enum.Enum):
    JOBS_WRITE = "jobs:write"
    JOBS_READ = "jobs:read"
    PROVIDERS_EXECUTE = "providers:execute"
    WORKFLOWS_WRITE = "workflows:write"
    WORKFLOWS_READ = "workflows:read"


SCOPE_NAMES = tuple(scope.value for scope in Scope)


def parse_scopes(values: object) -> tuple[str, ...]:
    if values is None:
        return ()
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValidationFailed("scopes must be an array of strings")
    unknown = [v for v in values if v not in SCOPE_NAMES]
    if unknown:
        raise ValidationFailed(f"unknown scope {unknown[0]!r} (known: {', '.join(SCOPE_NAMES)})")
    return tuple(dict.fromkeys(values))


class KeyStatus(enum.Enum):
    ACTIVE = "active"
    DISABLED = "disabled"
    REVOKED = "revoked"


class KeyEvent(enum.Enum):
    DISABLE = "disable"
    REVOKE = "revoke"


KEY_TRANSITIONS: Transitions[KeyStatus, KeyEvent] = Transitions(
    "api key",
    {
        (KeyStatus.ACTIVE, KeyEvent.DISABLE): KeyStatus.DISABLED,
        # Disabling twice is answered idempotently by the ring, not by the table.
        (KeyStatus.ACTIVE, KeyEvent.REVOKE): KeyStatus.REVOKED,
        (KeyStatus.DISABLED, KeyEvent.REVOKE): KeyStatus.REVOKED,
    },
)


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@attrs.define
class ApiKey:
    id: str
    name: str
    prefix: str
    key_hash: str
    organization_id: str
    principal_id: str  # the creator: requests with the key act as this principal
    scopes: tuple[str, ...]
    created_at: float
    description: str | None = None
    team_id: str | None = None
    expires_at: float | None = None
    last_used_at: float | None = None
    status: KeyStatus = KeyStatus.ACTIVE

    @property
    def disabled(self) -> bool:
        return self.status is not KeyStatus.ACTIVE

    @property
    def full_access(self) -> bool:
        return not self.scopes

    def allows(self, scope: str) -> bool:
        return self.full_access or scope in self.scopes


def apply_key(key: ApiKey, event: KeyEvent) -> None:
    """The only place a key's status changes; an illegal event raises and changes nothing."""
    key.status = transition(KEY_TRANSITIONS, key.status, event)


def make_raw_key(random_text: Callable[[int, str], str]) -> str:
    return KEY_PREFIX + random_text(RAW_LENGTH, BASE62)


@attrs.define
class KeyRing:
    """Keys by id and by prefix. Revoked keys leave both indexes (they exist nowhere after)."""

    new_id: Callable[[], str]
    random_text: Callable[[int, str], str]
    by_id: dict[str, ApiKey] = attrs.field(factory=dict)
    by_prefix: dict[str, ApiKey] = attrs.field(factory=dict)

    def create(
        self,
        *,
        name: str,
        organization_id: str,
        principal_id: str,
        scopes: tuple[str, ...],
        now: float,
        description: str | None = None,
        team_id: str | None = None,
        expires_at: float | None = None,
        raw: str | None = None,
        key_id: str | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its raw text (which is not kept). `raw` lets a seed fix the key."""
        if expires_at is not None and expires_at <= now:
            raise ValidationFailed("expires_at must be in the future")
        if raw is None:
            raw = make_raw_key(self.random_text)
            while raw[:PREFIX_LENGTH] in self.by_prefix:
                raw = make_raw_key(self.random_text)
        elif not raw.startswith(KEY_PREFIX) or len(raw) < PREFIX_LENGTH + 8:
            raise ValidationFailed("an API key must start with fab_ and have 20+ characters")
        prefix = raw[:PREFIX_LENGTH]
        if prefix in self.by_prefix:
            raise ValidationFailed(f"an API key with prefix {prefix} exists")
        key = ApiKey(
            id=key_id or self.new_id(),
            name=name,
            prefix=prefix,
            key_hash=hash_key(raw),
            organization_id=organization_id,
            principal_id=principal_id,
            scopes=scopes,
            created_at=now,
            description=description,
            team_id=team_id,
            expires_at=expires_at,
        )
        self.by_id[key.id] = key
        self.by_prefix[prefix] = key
        return key, raw

    def authenticate(self, raw: str, now: float) -> ApiKey:
        """The key a raw bearer value names; Unauthorized if unknown, wrong, disabled or expired."""
        key = self.by_prefix.get(raw[:PREFIX_LENGTH])
        if key is None or not hmac.compare_digest(key.key_hash, hash_key(raw)):
            raise Unauthorized("invalid API key")
        if key.status is KeyStatus.DISABLED:
            raise Unauthorized("API key is disabled")
        if key.expires_at is not None and key.expires_at <= now:
            raise Unauthorized("API key has expired")
        key.last_used_at = now
        return key

    def get(self, key_id: str) -> ApiKey:
        key = self.by_id.get(key_id)
        if key is None:
            raise NotFound(f"api key {key_id} not found")
        return key

    def disable(self, key: ApiKey) -> ApiKey:
        if key.status is not KeyStatus.DISABLED:
            apply_key(key, KeyEvent.DISABLE)
        return key

    def revoke(self, key: ApiKey) -> ApiKey:
        apply_key(key, KeyEvent.REVOKE)
        del self.by_id[key.id]
        del self.by_prefix[key.prefix]
        return key
