"""Typed domain errors of the FoundryOps core, in the service's own error codes.

Owns `FoundryOpsError` and its subclasses. Each carries the documented `code`
(INVALID_SCHEMA, DATASET_NOT_FOUND, ...), a human `message` and a `details` mapping; the API
layer maps the class to an HTTP status once. Imports nothing from the rest of the package and
nothing from trio, quart or yaml.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(auto_exc=True, eq=False)
class FoundryOpsError(Exception):
    """Base of every core error: a documented `code`, a `message` and `details`."""

    code: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)

    def __str__(self) -> str:
        return self.message


class InvalidRequest(FoundryOpsError):
    """The request is malformed or asks for something that is not allowed (400)."""


class InvalidSchema(FoundryOpsError):
    """A schema or a value does not fit the declared types (400, INVALID_SCHEMA)."""


class Unauthorized(FoundryOpsError):
    """No API key, or an unknown one (401, UNAUTHORIZED)."""


class Forbidden(FoundryOpsError):
    """The key is valid but lacks the scope the route needs (403, FORBIDDEN)."""


class NotFound(FoundryOpsError):
    """A dataset, snapshot, job, upload or artifact does not exist (404)."""


class Conflict(FoundryOpsError):
    """The request contradicts the current state (409): reused idempotency key, illegal move."""


class Gone(FoundryOpsError):
    """The thing existed but its retention or expiry has passed (410)."""


class PayloadTooLarge(FoundryOpsError):
    """A body or a file is over a documented limit (413, PAYLOAD_TOO_LARGE)."""


class RateLimited(FoundryOpsError):
    """A token bucket is empty or the concurrency limit is reached (429, RATE_LIMIT)."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: int,
        limit: int,
        concurrency_limit: int,
        queue_depth: int,
    ) -> None:
        super().__init__("RATE_LIMIT", message, {"retry_after_seconds": retry_after})
        self.retry_after = retry_after
        self.limit = limit
        self.concurrency_limit = concurrency_limit
        self.queue_depth = queue_depth


class InsufficientCredits(FoundryOpsError):
    """An enforced balance cannot pay for the operation (402, INSUFFICIENT_CREDITS)."""


def invalid_schema(
    field: str, expected: str, received: str, message: str | None = None
) -> InvalidSchema:
    """The documented INVALID_SCHEMA error with details {field, expected, received}."""
    return InvalidSchema(
        "INVALID_SCHEMA",
        message or f"Field '{field}' expected {expected}, got {received}",
        {"field": field, "expected": expected, "received": received},
    )
