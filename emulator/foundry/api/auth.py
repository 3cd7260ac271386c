"""Bearer authentication and scope checks for Foundry routes, as one decorator.

A missing, unknown, expired or revoked token is a 401 in the route's error family; a token
without the route's scope is a 403 whose `errorName` is the one the Foundry SDK declares for
that endpoint, so the SDK raises its typed exception. One check (`BearerAuth.verify`) serves
both Quart routes (`require`, `bearer`) and raw ASGI routes (`require_raw`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import attrs
from quart import request

from ...platform.clock import Clock
from ...platform.errors import ApiError, ErrorFamily
from ...web.rawasgi import RawRequest
from ...web.requestlog import note_principal
from ..core.errors import AuthenticationError
from ..core.identity import Identity
from ..core.principals import Principal
from ..core.tokens import AccessToken
from .errors import ConjureFamily

P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen
class Caller:
    """The authenticated principal of a request and the token it used."""

    principal: Principal
    token: AccessToken


def bearer_token() -> str | None:
    """The bearer token of the current Quart request, if any."""
    return bearer_value(request.headers.get("Authorization"))


MALFORMED_AUTHORIZATION = (
    "The Authorization header must be 'Bearer <token>': it has another scheme or no token."
)


def bearer_value(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` value (scheme case-insensitive), if any."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


@attrs.frozen
class BearerAuth:
    """Built once per service instance; it reads the current Identity on every request, so
    decorators made when the blueprints were built keep working after a reset."""

    identity_source: Callable[[], Identity]
    clock: Clock

    @property
    def identity(self) -> Identity:
        return self.identity_source()

    def require(
        self,
        family: ErrorFamily,
        *,
        scope: str | None = None,
        denied: str = "PermissionDenied",
        parameters: Mapping[str, Any] | None = None,
    ) -> Caller:
        """Authenticate the current Quart request or raise the family's 401/403 ApiError."""
        return self.verify(
            family,
            request.headers.get("Authorization"),
            cast(MutableMapping[str, Any], request.scope),
            scope=scope,
            denied=denied,
            parameters=parameters,
        )

    def require_raw(
        self,
        raw: RawRequest,
        family: ErrorFamily,
        *,
        scope: str | None = None,
        denied: str = "PermissionDenied",
    ) -> Caller:
        """`require` for a raw ASGI route (emulator.web.rawasgi)."""
        return self.verify(
            family, raw.header(b"authorization"), raw.scope, scope=scope, denied=denied
        )

    def verify(
        self,
        family: ErrorFamily,
        authorization: str | None,
        asgi_scope: MutableMapping[str, Any],
        *,
        scope: str | None = None,
        denied: str = "PermissionDenied",
        parameters: Mapping[str, Any] | None = None,
    ) -> Caller:
        """Check an Authorization header value for a bearer token with `scope`; `asgi_scope`
        is the request's, where the request log learns who made the request."""
        value = bearer_value(authorization)
        if value is None and authorization and authorization.strip():
            # Never echo the header: it is usually the token itself, without "Bearer ".
            raise unauthorized(family, "missing_token", MALFORMED_AUTHORIZATION)
        try:
            principal, token = self.identity.authenticate(value, self.clock.now())
        except AuthenticationError as error:
            raise unauthorized(family, error.code, error.message) from None
        if scope is not None and scope not in token.scopes:
            raise family.error(
                403,
                denied if isinstance(family, ConjureFamily) else "insufficient_scope",
                f"The token lacks the scope {scope}.",
                parameters=parameters,
            )
        # The request log shows who made each request (a name, never the token).
        note_principal(asgi_scope, principal.username)
        return Caller(principal=principal, token=token)

    def bearer(
        self,
        family: ErrorFamily,
        *,
        scope: str | None = None,
        denied: str = "PermissionDenied",
        parameters: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
    ) -> Callable[[Callable[Concatenate[Caller, P], Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """Decorate a handler `(caller, **path_args)`; `parameters` builds the 403's parameters."""

        def decorate(
            handler: Callable[Concatenate[Caller, P], Awaitable[R]],
        ) -> Callable[P, Awaitable[R]]:
            @functools.wraps(handler)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                caller = self.require(
                    family,
                    scope=scope,
                    denied=denied,
                    parameters=parameters(dict(kwargs)) if parameters else None,
                )
                return await handler(caller, *args, **kwargs)

            return wrapper

        return decorate


def unauthorized(family: ErrorFamily, reason: str, message: str) -> ApiError:
    """The 401 for a failed bearer authentication; `reason` is the core's error code."""
    if isinstance(family, ConjureFamily):
        code = "MissingCredentials" if reason == "missing_token" else "InvalidCredentials"
    else:
        code = "invalid_token"
    return family.error(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="foundry"'})
