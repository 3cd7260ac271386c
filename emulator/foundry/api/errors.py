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
from ..core.errors import Conflict, DomainError, NotFound

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


# RFC 6749 errors of the Multipass OAuth endpoints: {"error", "error_description"}.
OAUTH = ErrorFamily("oauth")
# Foundry platform API errors (Conjure).
FOUNDRY_API = ConjureFamily("foundry")
# Compute-module runtime and contour routes: {"error", "error_description"}.
COMPUTE_MODULE = ErrorFamily("compute-module")

PREFIXES: tuple[tuple[str, ErrorFamily], ...] = (
    ("/multipass", OAUTH),
    ("/api", FOUNDRY_API),
    ("/_emulate/foundry/compute-modules", COMPUTE_MODULE),
    ("/contour-backend-multiplexer", COMPUTE_MODULE),
)


def conjure_error(error: DomainError) -> ApiError:
    """A core error as a Foundry (Conjure) error (see `ConjureFamily.translate`)."""
    translated = FOUNDRY_API.translate(error)
    assert translated is not None
    return translated
