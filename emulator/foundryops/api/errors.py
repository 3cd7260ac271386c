"""The FoundryOps error family: `{error: {code, message, details}, correlation_id, request_id}`.

Owns `FoundryOpsFamily`, which renders every FoundryOps error in the source's shape, names
HTTP-level failures in the service's vocabulary (PAYLOAD_TOO_LARGE, NOT_FOUND, ...), and
translates the core's domain errors once (class -> status). The request and correlation ids
travel in the error's `X-Request-Id` / `X-Correlation-Id` headers; `decorate` makes them up
for errors raised before a request had ids. Imports nothing from trio or quart.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ...platform.errors import ApiError, ErrorFamily
from ..core.errors import (
    Conflict,
    Forbidden,
    FoundryOpsError,
    Gone,
    InsufficientCredits,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
)

REQUEST_ID = "X-Request-Id"
CORRELATION_ID = "X-Correlation-Id"

FRAMEWORK_CODES: Mapping[int, str] = {
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    413: "PAYLOAD_TOO_LARGE",
    431: "HEADERS_TOO_LARGE",
}

_STATUS_BY_CLASS: tuple[tuple[type[FoundryOpsError], int], ...] = (
    (Unauthorized, 401),
    (InsufficientCredits, 402),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Gone, 410),
    (PayloadTooLarge, 413),
    (RateLimited, 429),
)


def status_of(error: FoundryOpsError) -> int:
    for kind, status in _STATUS_BY_CLASS:
        if isinstance(error, kind):
            return status
    return 400


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


class FoundryOpsFamily(ErrorFamily):
    def body(self, error: ApiError) -> Any:
        request_id = error.headers.get(REQUEST_ID) or new_request_id()
        return {
            "error": {
                "code": error.code,
                "message": error.description,
                "details": dict(error.parameters),
            },
            "correlation_id": error.headers.get(CORRELATION_ID) or request_id,
            "request_id": request_id,
        }

    def framework_code(self, status: int) -> str:
        if status >= 500:
            return "INTERNAL"
        return FRAMEWORK_CODES.get(status, "INVALID_REQUEST")

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["error", "correlation_id", "request_id"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    },
                },
                "correlation_id": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }

    def translate(self, error: Exception) -> ApiError | None:
        if not isinstance(error, FoundryOpsError):
            return None
        api_error = self.error(
            status_of(error), error.code, error.message, parameters=dict(error.details)
        )
        if isinstance(error, RateLimited):
            api_error.headers["Retry-After"] = str(error.retry_after)
            api_error.headers["X-RateLimit-Limit"] = str(error.limit)
            api_error.headers["X-RateLimit-Remaining"] = "0"
            api_error.headers["X-RateLimit-Reset"] = str(error.retry_after)
            api_error.headers["X-Concurrency-Limit"] = str(error.concurrency_limit)
            api_error.headers["X-Queue-Depth"] = str(error.queue_depth)
        if isinstance(error, InsufficientCredits):
            api_error.headers["Link"] = '</api/v2/billing/top-up>; rel="payment"'
        return api_error

    def decorate(self, error: ApiError) -> None:
        request_id = error.headers.setdefault(REQUEST_ID, new_request_id())
        error.headers.setdefault(CORRELATION_ID, request_id)


FOUNDRYOPS = FoundryOpsFamily("foundryops")
PREFIXES: tuple[tuple[str, ErrorFamily], ...] = (
    ("/api", FOUNDRYOPS),
    ("/uploads", FOUNDRYOPS),
    ("/metrics", FOUNDRYOPS),
    ("/_emulate/foundryops", FOUNDRYOPS),
)
