"""The error taxonomy: one exception type, error families that know their JSON shape.

Owns how an API error becomes a status, a JSON body and headers. A family is the wire shape a
group of routes uses for errors (the OAuth `error`/`error_description` shape, Palantir's
Conjure shape with `errorCode`/`errorName`/`errorInstanceId`/`parameters`, ...). Services
declare which family answers under which path prefix, so unknown routes, wrong methods and
malformed bodies are answered in the family of the route that was meant.

Imports nothing from the rest of the package, and nothing from trio, quart or hypercorn.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import attrs

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


@attrs.frozen
class ErrorFamily:
    """A wire shape for errors. `style` is "oauth" (error, error_description) or "conjure"."""

    name: str
    style: str

    def __attrs_post_init__(self) -> None:
        if self.style not in ("oauth", "conjure"):
            raise ValueError(f"unknown error style {self.style!r}")

    def body(self, error: ApiError) -> dict[str, Any]:
        if self.style == "oauth":
            return {"error": error.code, "error_description": error.description}
        return {
            "errorCode": CONJURE_CODES.get(
                error.status, "INTERNAL" if error.status >= 500 else "INVALID_ARGUMENT"
            ),
            "errorName": error.code,
            "errorDescription": error.description,
            "errorInstanceId": str(uuid.uuid4()),
            "parameters": dict(error.parameters),
        }

    def error(
        self,
        status: int,
        code: str,
        description: str,
        *,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiError:
        """Build an error of this family (raise it from a handler)."""
        return ApiError(
            family=self,
            status=status,
            code=code,
            description=description,
            parameters=dict(parameters or {}),
            headers=dict(headers or {}),
        )


# A plain JSON family for the emulator's own routes and for paths no service claims.
EMULATOR = ErrorFamily("emulator", "oauth")


@attrs.define(auto_exc=True, eq=False)
class ApiError(Exception):
    """An error answer. `code` is the OAuth/compute-module `error` or the Conjure `errorName`."""

    family: ErrorFamily
    status: int
    code: str
    description: str
    parameters: dict[str, Any] = attrs.field(factory=dict)
    headers: dict[str, str] = attrs.field(factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.description}"

    def body(self) -> dict[str, Any]:
        return self.family.body(self)


@attrs.frozen
class FamilyMap:
    """Which error family answers for which path prefix (longest prefix wins)."""

    prefixes: tuple[tuple[str, ErrorFamily], ...] = ()
    default: ErrorFamily = EMULATOR

    def with_prefix(self, prefix: str, family: ErrorFamily) -> FamilyMap:
        merged = dict(self.prefixes)
        merged[prefix] = family
        ordered = sorted(merged.items(), key=lambda item: len(item[0]), reverse=True)
        return attrs.evolve(self, prefixes=tuple(ordered))

    def for_path(self, path: str) -> ErrorFamily:
        for prefix, family in self.prefixes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return family
        return self.default


def framework_error(family: ErrorFamily, status: int, path: str, method: str) -> ApiError:
    """The answer for an HTTP-level failure (no such route, wrong method, body too large, ...)."""
    if status == 404:
        code = "Default:NotFound" if family.style == "conjure" else "not_found"
        return family.error(404, code, f"No route matches {path}.", parameters={"path": path})
    if status == 405:
        code = "Default:MethodNotAllowed" if family.style == "conjure" else "method_not_allowed"
        return family.error(
            405, code, f"{method} is not allowed on {path}.", parameters={"method": method}
        )
    if status == 413:
        code = "Default:RequestEntityTooLarge" if family.style == "conjure" else "request_too_large"
        return family.error(413, code, "The request body is larger than the emulator accepts.")
    if status == 431:
        code = (
            "Default:RequestHeaderFieldsTooLarge"
            if family.style == "conjure"
            else "request_header_fields_too_large"
        )
        return family.error(
            431, code, "The request's headers are larger than the emulator accepts."
        )
    if status == 408:
        code = "Default:RequestTimeout" if family.style == "conjure" else "request_timeout"
        return family.error(408, code, "The request body did not arrive in time.")
    if status < 500:
        code = "Default:InvalidArgument" if family.style == "conjure" else "invalid_request"
        return family.error(status, code, "The request could not be read.")
    code = "Default:Internal" if family.style == "conjure" else "server_error"
    return family.error(500, code, "The emulator failed to handle this request; see its log.")
