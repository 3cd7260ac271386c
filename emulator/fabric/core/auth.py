"""The authentication chain and the per-route scope rule.

Owns `Caller` (who is asking and how) and `authenticate`, the chain where the first match wins:
`Authorization: Bearer fab_...` (an API key; a bad key is refused, never passed down the chain),
`Authorization: Bearer <HS256 JWT>` (`sub` is the principal, `exp` enforced), the
`X-Principal-Id` dev header (ignored in production mode, so the request is then anonymous),
and anonymous (allowed only on public routes). Also `require_scope`.
Imports joserfc (the JOSE library ConnectSoft signs with too) for HS256 verification; nothing
from trio, quart or yaml.
"""

from __future__ import annotations

import enum
import functools
import uuid

import attrs
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from .apikeys import KEY_PREFIX, ApiKey, KeyRing
from .errors import Forbidden, Unauthorized


class AuthMethod(enum.Enum):
    API_KEY = "api_key"
    JWT = "jwt"
    DEV_HEADER = "dev_header"


@attrs.frozen
class Caller:
    """Who is asking, how they proved it, and the request (for the audit trail)."""

    principal_id: str
    method: AuthMethod
    api_key: ApiKey | None = None
    request_id: str | None = None

    @property
    def key_org(self) -> str | None:
        return None if self.api_key is None else self.api_key.organization_id

    @property
    def full_access(self) -> bool:
        return self.api_key is None or self.api_key.full_access


def _canonical_uuid(text: str) -> str | None:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4)
def _hs256_key(secret: str) -> OctKey:
    """The seed's secret as a key, imported once (the seed requires 32 bytes or more)."""
    return OctKey.import_key(secret.encode("utf-8"))


def verify_jwt(token: str, secret: str | None, now: float) -> str:
    """The `sub` of a valid HS256 token; Unauthorized otherwise (no detail that helps forging)."""
    if not secret:
        raise Unauthorized("invalid bearer token")
    try:
        claims = jwt.decode(token, _hs256_key(secret), algorithms=["HS256"]).claims
    except (JoseError, ValueError):
        raise Unauthorized("invalid bearer token") from None
    exp = claims.get("exp")
    # exp and nbf are checked against the injected clock, not the wall clock, so tests
    # control them.
    if exp is not None and (not isinstance(exp, int | float) or exp <= now):
        raise Unauthorized("bearer token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not isinstance(nbf, int | float) or nbf > now):
        raise Unauthorized("invalid bearer token")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("invalid bearer token")
    return sub


def authenticate(
    *,
    authorization: str | None,
    principal_header: str | None,
    public: bool,
    production: bool,
    keys: KeyRing,
    jwt_secret: str | None,
    now: float,
) -> Caller | None:
    """The caller, or None for an anonymous request on a public route."""
    if authorization is not None and authorization.strip():
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("Authorization must be 'Bearer <token>'")
        if value.startswith(KEY_PREFIX):
            key = keys.authenticate(value, now)
            return Caller(key.principal_id, AuthMethod.API_KEY, key)
        return Caller(verify_jwt(value, jwt_secret, now), AuthMethod.JWT)
    if principal_header is not None and not production:
        principal = _canonical_uuid(principal_header.strip())
        if principal is None:
            raise Unauthorized("X-Principal-Id must be a UUID")
        return Caller(principal, AuthMethod.DEV_HEADER)
    if public:
        return None
    raise Unauthorized("authentication required")


def require_scope(caller: Caller, scope: str | None) -> None:
    """`scope` None marks a route only full-access keys may use; a JWT or dev caller passes."""
    key = caller.api_key
    if key is None or key.full_access:
        return
    if scope is None:
        raise Forbidden("Insufficient permissions: this route needs a full-access API key")
    if scope not in key.scopes:
        raise Forbidden(f"Insufficient permissions: API key lacks scope {scope}")
