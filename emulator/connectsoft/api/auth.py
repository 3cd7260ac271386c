"""The bearer check every runtime route and RPC makes first: the token as an `access.Caller`.

Owns `caller_from(authorization, issuer, now)`: a missing header, another scheme or a token that
does not verify is `Unauthenticated` (401 on REST, UNAUTHENTICATED on gRPC); the scope and
tenant checks that follow are the core's (`core.access.decide`). The token itself is never
logged or echoed. Imports the core only.
"""

from __future__ import annotations

from ..core.access import Caller
from ..core.errors import Unauthenticated
from ..core.oidc import OAuthError, OidcIssuer


def caller_from(authorization: str | None, issuer: OidcIssuer, now: float) -> Caller:
    if not authorization or not authorization.strip():
        raise Unauthenticated("Unauthenticated", "A bearer token is required.")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "Unauthenticated", "The Authorization header must be 'Bearer <token>'."
        )
    try:
        return issuer.verify(token.strip(), now)
    except OAuthError as error:
        raise Unauthenticated("InvalidToken", error.message) from None
