"""The error families of the Foundry service and the path prefixes each one answers for."""

from __future__ import annotations

from ...platform.errors import ApiError, ErrorFamily
from ..core.errors import Conflict, DomainError, NotFound

# RFC 6749 errors of the Multipass OAuth endpoints: {"error", "error_description"}.
OAUTH = ErrorFamily("oauth", "oauth")
# Foundry platform API errors (Conjure): {"errorCode", "errorName", "errorDescription",
# "errorInstanceId", "parameters"}.
FOUNDRY_API = ErrorFamily("foundry", "conjure")
# Compute-module runtime and contour routes: {"error", "error_description"}.
COMPUTE_MODULE = ErrorFamily("compute-module", "oauth")

PREFIXES: tuple[tuple[str, ErrorFamily], ...] = (
    ("/multipass", OAUTH),
    ("/api", FOUNDRY_API),
    ("/_emulate/foundry/compute-modules", COMPUTE_MODULE),
    ("/contour-backend-multiplexer", COMPUTE_MODULE),
)


def conjure_error(error: DomainError) -> ApiError:
    """A core error as a Foundry (Conjure) error: its code is the errorName."""
    status = 400  # InvalidArgument, and anything else the request caused
    if isinstance(error, NotFound):
        status = 404
    elif isinstance(error, Conflict):
        status = 409
    return FOUNDRY_API.error(status, error.code, error.message, parameters=error.parameters)
