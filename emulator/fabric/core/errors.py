"""Typed domain errors of the Fabric core; the API layer maps each class to one HTTP status.

Owns `FabricError` and its subclasses, and `transition`, the lookup every Fabric state machine
goes through (the platform's `Transitions` table; a refused event becomes a 409).
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import attrs

from ...platform.statemachine import IllegalTransition as MachineRefused
from ...platform.statemachine import Transitions


@attrs.define(auto_exc=True, eq=False)
class FabricError(Exception):
    """Base of every Fabric domain error: a wire `code` and a short human `message`."""

    message: str
    details: dict[str, Any] | None = None

    code = "internal_error"
    status = 500

    def __str__(self) -> str:
        return self.message


class ValidationFailed(FabricError):
    code = "validation_error"
    status = 400


class BadRequest(FabricError):
    """The body is not parseable at all (not JSON)."""

    code = "bad_request"
    status = 400


class Unauthorized(FabricError):
    code = "unauthorized"
    status = 401


class Forbidden(FabricError):
    code = "forbidden"
    status = 403


class NotFound(FabricError):
    """Unknown, or not visible to the caller (Fabric answers both the same way)."""

    code = "not_found"
    status = 404


class Conflict(FabricError):
    code = "conflict"
    status = 409


class PayloadTooLarge(FabricError):
    code = "payload_too_large"
    status = 413


class RateLimited(FabricError):
    """A bounded queue is full; the API answers 429 with Retry-After."""

    code = "rate_limited"
    status = 429
    retry_after = 1


class ProviderFailed(FabricError):
    """A provider call failed (forced failure, scripted failure rate, unhealthy provider)."""

    code = "provider_error"
    status = 502


class IllegalTransition(Conflict):
    """A state machine refused an event; nothing changed."""


S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


def transition(machine: Transitions[S, E], state: S, event: E) -> S:
    """The target of `event` in `state` by the machine's one table; an event the table does
    not allow is a 409 (IllegalTransition) and changes nothing."""
    try:
        return machine.target(state, event)
    except MachineRefused as refused:
        raise IllegalTransition(str(refused)) from None
