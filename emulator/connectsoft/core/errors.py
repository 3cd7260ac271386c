"""Typed domain errors of the ConnectSoft core. The API layer maps each class to one HTTP status
and one gRPC status code; handlers never pick a status by hand. Imports nothing but attrs."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(auto_exc=True, eq=False)
class DomainError(Exception):
    """Base of every core error: a machine-readable `code` and a human `message`."""

    code: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)

    def __str__(self) -> str:
        return self.message


class Unauthenticated(DomainError):
    """No bearer token, or one that is not valid (bad signature, expired, wrong issuer)."""


class Forbidden(DomainError):
    """A valid token that lacks the route's scope or belongs to another tenant."""


class GovernanceDenied(DomainError):
    """The governance gate refused a mutation on a production environment."""


class ApprovalRequired(DomainError):
    """The governance gate wants an approval first; `details` holds the approvalId."""


class NotFound(DomainError):
    """A named environment, deployment, configuration, service or approval does not exist."""


class InvalidArgument(DomainError):
    """The request is well-formed JSON but its content is not acceptable."""


class Conflict(DomainError):
    """The request contradicts the current state (deploying into a Failed environment)."""


class Exhausted(DomainError):
    """A bounded resource is full (too many open streams); retry later."""
