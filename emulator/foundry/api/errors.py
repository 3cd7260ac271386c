"""The error families of the Foundry service and the path prefixes each one answers for."""

from __future__ import annotations

from ...errors import ErrorFamily

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
