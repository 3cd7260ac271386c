"""ConnectSoft's domain errors as gRPC status codes (the wire itself is emulator.web.grpcwire).

Owns `status_for_error`: the status a ConnectSoft domain error ends a call with, its message
keeping the domain code. Pure: imports nothing from trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

from ..web.grpcwire import GrpcError, StatusCode
from .core.errors import (
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

_ERROR_CODES: tuple[tuple[type[DomainError], StatusCode], ...] = (
    (Unauthenticated, StatusCode.UNAUTHENTICATED),
    (Forbidden, StatusCode.PERMISSION_DENIED),
    (GovernanceDenied, StatusCode.PERMISSION_DENIED),
    (ApprovalRequired, StatusCode.PERMISSION_DENIED),
    (NotFound, StatusCode.NOT_FOUND),
    (InvalidArgument, StatusCode.INVALID_ARGUMENT),
    (Conflict, StatusCode.FAILED_PRECONDITION),
    (Exhausted, StatusCode.RESOURCE_EXHAUSTED),
)


def status_for_error(error: DomainError) -> GrpcError:
    """The gRPC status a domain error ends a call with; the message keeps the domain code."""
    for kind, code in _ERROR_CODES:
        if isinstance(error, kind):
            return GrpcError(code, f"{error.code}: {error.message}")
    return GrpcError(StatusCode.UNKNOWN, f"{error.code}: {error.message}")
