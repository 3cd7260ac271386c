"""The error families of ConnectSoft and the path prefixes each one answers for.

Owns `ProblemFamily` (the runtime API's errors as RFC 9457 problem details, the emulator's choice
where the source is silent: `{"type", "title", "status", "detail", "code", ...details}`),
`TokenFamily` (the OIDC token endpoint's RFC 6749 `{"error", "error_description"}`), the one
table from domain error to HTTP status, and `SCHEMA_VERSION`, the `cs-schema-version` every
answer of the service carries, errors included. Imports the core's errors, nothing from quart.
"""

from __future__ import annotations

from typing import Any

from ...platform.errors import ApiError, ErrorFamily
from ...platform.statemachine import IllegalTransition
from ..core.errors import (
    ApprovalRequired,
    Conflict,
    DomainError,
    Exhausted,
    Forbidden,
    GovernanceDenied,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from ..core.oidc import OAuthError

SCHEMA_VERSION = "1.0"
SCHEMA_HEADER = "cs-schema-version"
RETRY_AFTER_SECONDS = "1"

_STATUS: tuple[tuple[type[DomainError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (GovernanceDenied, 403),
    (ApprovalRequired, 403),
    (NotFound, 404),
    (InvalidArgument, 400),
    (Conflict, 409),
    (Exhausted, 429),
)


def status_of(error: DomainError) -> int:
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 400


class ProblemFamily(ErrorFamily):
    """RFC 9457 problem details; `ApiError.code` is the domain code (TenantMismatch, ...)."""

    def body(self, error: ApiError) -> Any:
        body = {
            "type": f"urn:connectsoft:runtime:problem:{error.code}",
            "title": error.code,
            "status": error.status,
            "detail": error.description,
            "code": error.code,
        }
        for key, value in error.parameters.items():
            body.setdefault(key, value)
        return body

    def framework_code(self, status: int) -> str:
        return {
            404: "RouteNotFound",
            405: "MethodNotAllowed",
            408: "RequestTimeout",
            413: "RequestTooLarge",
            431: "RequestHeadersTooLarge",
        }.get(status, "InternalError" if status >= 500 else "InvalidRequest")

    def schema(self) -> dict[str, Any]:
        keys = ["type", "title", "status", "detail", "code"]
        properties: dict[str, Any] = {key: {"type": "string"} for key in keys}
        properties["status"] = {"type": "integer"}
        return {"type": "object", "required": keys, "properties": properties}

    def decorate(self, error: ApiError) -> None:
        error.headers.setdefault(SCHEMA_HEADER, SCHEMA_VERSION)
        if error.status == 401:
            error.headers.setdefault(
                "WWW-Authenticate", 'Bearer realm="connectsoft", error="invalid_token"'
            )
        if error.status == 429:
            error.headers.setdefault("Retry-After", RETRY_AFTER_SECONDS)

    def translate(self, error: Exception) -> ApiError | None:
        if isinstance(error, OAuthError):
            # A bearer token that did not verify on a runtime route.
            return self.error(401, "InvalidToken", error.message)
        if isinstance(error, IllegalTransition):
            # The core checks what a caller may ask for first; this is the safety net.
            return self.error(409, "IllegalTransition", str(error))
        if not isinstance(error, DomainError):
            return None
        return self.error(status_of(error), error.code, error.message, parameters=error.details)


class TokenFamily(ErrorFamily):
    """The token endpoint's plain OAuth shape, with the schema header."""

    def decorate(self, error: ApiError) -> None:
        error.headers.setdefault(SCHEMA_HEADER, SCHEMA_VERSION)
        error.headers.setdefault("Cache-Control", "no-store")

    def translate(self, error: Exception) -> ApiError | None:
        if isinstance(error, OAuthError):
            status = 401 if error.code == "invalid_client" else 400
            api_error = self.error(status, error.code, error.message)
            if status == 401:
                api_error.headers["WWW-Authenticate"] = 'Basic realm="connectsoft"'
            return api_error
        return None


PROBLEMS = ProblemFamily("connectsoft")
TOKEN = TokenFamily("connectsoft-token")
TOKEN_PATH = "/connect/token"
PREFIXES: tuple[tuple[str, ErrorFamily], ...] = (
    ("/runtime", PROBLEMS),
    ("/v1/runtime", PROBLEMS),
    ("/_emulate/connectsoft", PROBLEMS),
    (TOKEN_PATH, TOKEN),
)
