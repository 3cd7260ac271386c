"""The emulator's own OpenID Connect token issuer for ConnectSoft.

Owns `OidcIssuer`: the client-credentials grant for the seeded clients, signed ES256 access tokens
(JWTs with `scope` and `tenantId` claims), their verification into an `access.Caller`, and the
discovery document and JWKS as data. The signing key comes in from outside (`keys.py` keeps it
in the state directory) and never leaves this module except as its public JWK. Client secrets are
compared in constant time and never echoed. Imports joserfc, never trio, quart or yaml.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from ..seed import SCOPES, ClientSeed
from .access import Caller
from .errors import DomainError

ALGORITHM = "ES256"
AUDIENCE = "connectsoft-runtime"
# Clock skew allowed on `nbf` and `exp`, in seconds.
LEEWAY = 5.0
MAX_TOKEN_CHARS = 8192
# Distinct `iss` values (base URLs clients used) remembered for verification.
MAX_ISSUERS = 32
# Tokens whose signature was checked, remembered so a client's next call skips the ES256 check
# (the costly part of a REST read); the claims are still checked on every call.
MAX_VERIFIED = 4096


class OAuthError(DomainError):
    """A token-endpoint refusal; `code` is the RFC 6749 error (invalid_client, invalid_scope...)."""


@attrs.frozen
class IssuedToken:
    access_token: str = attrs.field(repr=False)
    expires_in: int
    scope: str
    tenant_id: str

    def response(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }


@attrs.define
class OidcIssuer:
    key: ECKey = attrs.field(repr=False)
    clients: dict[str, ClientSeed]
    lifetime: int
    issuer: str
    # Makes each token's `jti`; injected so tests can predict it.
    new_id: Callable[[], str]
    # Every `iss` a token was issued under (the base URL the client reached: HTTP or HTTPS).
    _issued_under: set[str] = attrs.field(factory=set)
    # Token -> (header, claims) of a signature already verified; oldest dropped past the bound.
    _verified: dict[str, tuple[dict[str, Any], dict[str, Any]]] = attrs.field(
        factory=dict, repr=False
    )
    _key_id: str = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._key_id = self.key.thumbprint()

    @classmethod
    def create(
        cls,
        key: ECKey,
        clients: Iterable[ClientSeed],
        lifetime: int,
        issuer: str,
        new_id: Callable[[], str],
    ) -> OidcIssuer:
        return cls(key, {c.client_id: c for c in clients}, lifetime, issuer, new_id)

    @property
    def key_id(self) -> str:
        return self._key_id

    def issue(
        self,
        *,
        client_id: str | None,
        client_secret: str | None,
        grant_type: str | None,
        scope: str | None,
        tenant: str | None,
        now: float,
        issuer: str | None = None,
    ) -> IssuedToken:
        """The client-credentials grant. Validates everything before signing anything."""
        if grant_type != "client_credentials":
            raise OAuthError(
                "unsupported_grant_type", "Only the client_credentials grant is supported."
            )
        client = self.clients.get(client_id or "")
        given = (client_secret or "").encode()
        # Compare against something even for an unknown client, so timing says nothing.
        expected = (client.client_secret if client else "\x00unknown").encode()
        if client is None or not hmac.compare_digest(given, expected):
            raise OAuthError("invalid_client", "Client authentication failed.")
        if scope is None or not scope.strip():
            granted = client.scopes
        else:
            asked = tuple(dict.fromkeys(scope.split()))
            unknown = [s for s in asked if s not in SCOPES]
            if unknown:
                raise OAuthError("invalid_scope", f"Unknown scope {unknown[0]}.")
            refused = [s for s in asked if s not in client.scopes]
            if refused:
                raise OAuthError(
                    "invalid_scope", f"The client may not request the scope {refused[0]}."
                )
            granted = asked
        if tenant is None or not tenant.strip():
            tenant_id = client.tenants[0]
        elif tenant in client.tenants:
            tenant_id = tenant
        else:
            raise OAuthError("invalid_request", f"The client is not bound to tenant {tenant}.")
        scope_text = " ".join(granted)
        issued_at = int(now)
        iss = issuer or self.issuer
        if iss not in self._issued_under and len(self._issued_under) >= MAX_ISSUERS:
            # Host headers are the client's to choose: the set stays bounded.
            iss = self.issuer
        claims = {
            "iss": iss,
            "sub": client.client_id,
            "aud": AUDIENCE,
            "client_id": client.client_id,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + self.lifetime,
            "jti": self.new_id(),
            "scope": scope_text,
            "tenantId": tenant_id,
        }
        header = {"alg": ALGORITHM, "kid": self.key_id, "typ": "at+jwt"}
        token = jwt.encode(header, claims, self.key, algorithms=[ALGORITHM])
        self._issued_under.add(iss)
        return IssuedToken(token, self.lifetime, scope_text, tenant_id)

    def verify(self, token: str, now: float) -> Caller:
        """The caller a bearer token stands for, or Unauthenticated-style OAuthError."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise OAuthError("invalid_token", "The bearer token is not a valid token.")
        header, claims = self._signed_parts(token)
        if header.get("kid") != self.key_id:
            raise OAuthError("invalid_token", "The bearer token was signed by another key.")
        iss = claims.get("iss")
        if (iss != self.issuer and iss not in self._issued_under) or claims.get("aud") != AUDIENCE:
            raise OAuthError("invalid_token", "The bearer token was issued for someone else.")
        exp = claims.get("exp")
        nbf = claims.get("nbf", 0)
        if not isinstance(exp, int) or not isinstance(nbf, int):
            raise OAuthError("invalid_token", "The bearer token has no valid lifetime.")
        if now > exp + LEEWAY:
            raise OAuthError("invalid_token", "The bearer token has expired.")
        if now + LEEWAY < nbf:
            raise OAuthError("invalid_token", "The bearer token is not valid yet.")
        scope = claims.get("scope")
        tenant = claims.get("tenantId")
        subject = claims.get("sub")
        if (
            not isinstance(scope, str)
            or not isinstance(tenant, str)
            or not isinstance(subject, str)
        ):
            raise OAuthError("invalid_token", "The bearer token lacks scope, tenantId or sub.")
        return Caller(subject=subject, tenant_id=tenant, scopes=frozenset(scope.split()))

    def _signed_parts(self, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The header and claims of a token whose signature is this issuer's (checked once per
        token, then remembered); OAuthError otherwise."""
        known = self._verified.get(token)
        if known is not None:
            return known
        try:
            decoded = jwt.decode(token, self.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise OAuthError("invalid_token", "The bearer token is not a valid token.") from None
        parts = (dict(decoded.header), dict(decoded.claims))
        if len(self._verified) >= MAX_VERIFIED:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = parts
        return parts

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        public.update({"kid": self.key_id, "use": "sig", "alg": ALGORITHM})
        return {"keys": [public]}

    def discovery(self, base_url: str) -> dict[str, Any]:
        """The OpenID Provider metadata; `base_url` is where the caller reached the emulator and
        is the issuer there (OIDC clients check that the two agree)."""
        base = base_url.rstrip("/")
        return {
            "issuer": base,
            "token_endpoint": f"{base}/connect/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "scopes_supported": list(SCOPES),
            "claims_supported": ["sub", "client_id", "scope", "tenantId", "iss", "aud", "exp"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "token_endpoint_auth_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
        }
