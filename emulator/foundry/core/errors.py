"""Typed domain errors of the Foundry core. The API layer maps each to a status and family."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(auto_exc=True, eq=False)
class DomainError(Exception):
    """Base of every core error: a machine-readable `code` and a human `message`."""

    code: str
    message: str
    parameters: dict[str, Any] = attrs.field(factory=dict)

    def __str__(self) -> str:
        return self.message


class AuthenticationError(DomainError):
    """A bearer token is missing, unknown, expired or revoked (code says which)."""


class NotFound(DomainError):
    """A named thing does not exist."""


class InvalidArgument(DomainError):
    """A request is well-formed but its content is not acceptable."""


class Conflict(DomainError):
    """The request contradicts the current state (for example a second result for a job)."""


class QueueFull(DomainError):
    """A bounded queue has no room; retry later."""
