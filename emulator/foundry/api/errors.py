"""The error families of the Foundry service and the path prefixes each one answers for.

Owns Foundry's wire shapes for errors: Conjure (`ConjureFamily`, the platform API's
`{"errorCode", "errorName", "errorDescription", "errorInstanceId", "parameters"}`) and the plain
`{"error", "error_description"}` shape of the Multipass OAuth endpoints and the compute-module
routes. The Conjure family translates the core's domain errors once, so API handlers let them
propagate instead of converting them by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ...platform.errors import ApiError, ErrorFamily
from ..broker import BrokerClosed
from ..core.errors import (
    AuthenticationError,
    Conflict,
    DomainError,
    InvalidArgument,
    NotFound,
    QueueFull,
)
from ..core.oauth import OAuthError

# Conjure's error codes by HTTP status, as Foundry's public API uses them.
CONJURE_CODES: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHORIZED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    409: "CONFLICT",
    413: "REQUEST_ENTITY_TOO_LARGE",
    415: "INVALID_ARGUMENT",
    431: "INVALID_ARGUMENT",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
    504: "TIMEOUT",
}

# The errorName of an HTTP-level failure, by status.
CONJURE_FRAMEWORK_NAMES: Mapping[int, str] = {
    404: "Default:NotFound",
    405: "Default:MethodNotAllowed",
    408: "Default:RequestTimeout",
    413: "Default:RequestEntityTooLarge",
    431: "Default:RequestHeaderFieldsTooLarge",
}


class ConjureFamily(ErrorFamily):
    """Foundry platform API errors (Conjure); `ApiError.code` is the errorName."""

    def body(self, error: ApiError) -> Any:
        return {
            "errorCode": CONJURE_CODES.get(
                error.status, "INTERNAL" if error.status >= 500 else "INVALID_ARGUMENT"
            ),
            "errorName": error.code,
            "errorDescription": error.description,
            "errorInstanceId": str(uuid.uuid4()),
            "parameters": dict(error.parameters),
        }

    def framework_code(self, status: int) -> str:
        if status >= 500:
            return "Default:Internal"
        return CONJURE_FRAMEWORK_NAMES.get(status, "Default:InvalidArgument")

    def schema(self) -> dict[str, Any]:
        keys = ["errorCode", "errorName", "errorDescription", "errorInstanceId", "parameters"]
        properties: dict[str, Any] = {key: {"type": "string"} for key in keys[:4]}
        properties["parameters"] = {"type": "object"}
        return {"type": "object", "required": keys, "properties": properties}

    def translate(self, error: Exception) -> ApiError | None:
        """A core error as a Conjure error: its code is the errorName."""
        if not isinstance(error, DomainError):
            return None
        status = 400  # InvalidArgument, and anything else the request caused
        if isinstance(error, NotFound):
            status = 404
        elif isinstance(error, Conflict):
            status = 409
        return self.error(status, error.code, error.message, parameters=error.parameters)


class OAuthFamily(ErrorFamily):
    """RFC 6749 errors of the Multipass OAuth endpoints: {"error", "error_description"}."""

    def translate(self, error: Exception) -> ApiError | None:
        """RFC 6749 section 5.2: 401 with a challenge for invalid_client, else 400; never
        cached (section 5.1)."""
        if not isinstance(error, OAuthError):
            return None
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        status = 400
        if error.code == "invalid_client":
            status = 401
            headers["WWW-Authenticate"] = 'Basic realm="multipass"'
        return self.error(status, error.code, error.message, headers=headers)


class ComputeModuleFamily(ErrorFamily):
    """Compute-module runtime and contour routes: {"error", "error_description"}."""

    def translate(self, error: Exception) -> ApiError | None:
        if isinstance(error, BrokerClosed):
            if error.kind.value == "shutdown":
                return self.error(503, "shutting_down", "The emulator is shutting down.")
            return self.error(
                503,
                "emulator_reset",
                "The emulator was reset while this request waited; send it again.",
            )
        if not isinstance(error, DomainError):
            return None
        if isinstance(error, NotFound):
            return self.error(404, error.code, error.message, parameters=error.parameters)
        if isinstance(error, AuthenticationError):
            return self.error(401, error.code, error.message)
        if isinstance(error, QueueFull):
            return self.error(429, error.code, error.message, headers={"Retry-After": "1"})
        if isinstance(error, Conflict | InvalidArgument):
            status = 409 if isinstance(error, Conflict) else 400
            return self.error(status, error.code, error.message, parameters=error.parameters)
        return self.error(400, error.code, error.message)


OAUTH = OAuthFamily("oauth")
# Foundry platform API errors (Conjure).
FOUNDRY_API = ConjureFamily("foundry")
COMPUTE_MODULE = ComputeModuleFamily("compute-module")

PREFIXES: tuple[tuple[str, ErrorFamily], ...] = (
    ("/multipass", OAUTH),
    ("/api", FOUNDRY_API),
    ("/_emulate/foundry/compute-modules", COMPUTE_MODULE),
    ("/contour-backend-multiplexer", COMPUTE_MODULE),
)


def translated(family: ErrorFamily, error: Exception) -> ApiError:
    """`error` as an answer of `family`, for the few places that must build the answer before
    raising (to log it, or to answer from inside a streaming response)."""
    answer = family.translate(error)
    if answer is None:
        raise TypeError(f"{family!r} does not translate {type(error).__name__}")
    return answer
