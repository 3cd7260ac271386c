"""The error taxonomy: one exception type, and error families that know their wire shape.

Owns how an API error becomes a status, a JSON body and headers. A family is the wire shape a
group of routes uses for errors. The base class is the emulator's own plain shape,
`{"error", "error_description"}`; a service that speaks another shape (Foundry's Conjure errors,
Fabric's envelope, FoundryOps' `{error: {code, message, details}}`) subclasses `ErrorFamily` in
its own package and overrides `body`, `framework_code` and `schema`. A family may also
translate the service's domain errors once (`translate`), so handlers raise core errors and
never convert them by hand. Services declare which family answers under which path prefix, so
unknown routes, wrong methods and malformed bodies are answered in the family of the route that
was meant.

Imports nothing from the rest of the package, and nothing from trio, quart or hypercorn.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

# The codes of HTTP-level failures (no route, wrong method, body too large, ...) in the plain
# shape; other families map the same statuses to their own vocabulary.
PLAIN_FRAMEWORK_CODES: Mapping[int, str] = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "request_too_large",
    431: "request_header_fields_too_large",
    500: "server_error",
}


class ErrorFamily:
    """A wire shape for errors; this base class is the plain `{"error", "error_description"}`.

    Subclasses override what differs: `body` (the JSON of an error), `framework_code` (the code of
    an HTTP-level failure), `schema` (the error body's JSON schema, for the OpenAPI document),
    `translate` (a domain error of the service as an `ApiError`, or None) and `decorate` (headers
    every error of the family carries, such as a request id).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def body(self, error: ApiError) -> Any:
        return {"error": error.code, "error_description": error.description}

    def framework_code(self, status: int) -> str:
        if status >= 500:
            return PLAIN_FRAMEWORK_CODES[500]
        return PLAIN_FRAMEWORK_CODES.get(status, "invalid_request")

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["error", "error_description"],
            "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
        }

    def translate(self, error: Exception) -> ApiError | None:
        """The service's own exception as an answer of this family; None: not ours (a 500)."""
        return None

    def decorate(self, error: ApiError) -> None:
        """Add what every error of this family carries (headers); called once per error."""

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
        error = ApiError(
            family=self,
            status=status,
            code=code,
            description=description,
            parameters=dict(parameters or {}),
            headers=dict(headers or {}),
        )
        self.decorate(error)
        return error


# The plain family for the emulator's own routes and for paths no service claims.
EMULATOR = ErrorFamily("emulator")


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

    def body(self) -> Any:
        return self.family.body(self)


@attrs.frozen
class FamilyMap:
    """Which error family answers for which path prefix (longest prefix wins)."""

    prefixes: tuple[tuple[str, ErrorFamily], ...] = ()
    default: ErrorFamily = EMULATOR

    def with_prefix(self, prefix: str, family: ErrorFamily) -> FamilyMap:
        """Add a prefix; a prefix claimed twice is a programming error (ValueError at start)."""
        merged = dict(self.prefixes)
        if prefix in merged:
            raise ValueError(
                f"path prefix {prefix!r} is claimed by both {merged[prefix]!r} and {family!r}"
            )
        merged[prefix] = family
        ordered = sorted(merged.items(), key=lambda item: len(item[0]), reverse=True)
        return attrs.evolve(self, prefixes=tuple(ordered))

    def for_path(self, path: str) -> ErrorFamily:
        for prefix, family in self.prefixes:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return family
        return self.default


def framework_error(
    family: ErrorFamily, status: int, path: str, method: str, *, detail: str = ""
) -> ApiError:
    """The answer for an HTTP-level failure (no such route, wrong method, body too large, ...);
    `detail` is appended to the description (for example, the limit that was exceeded)."""
    code = family.framework_code(status)
    suffix = f" {detail}" if detail else ""
    if status == 404:
        return family.error(404, code, f"No route matches {path}.", parameters={"path": path})
    if status == 405:
        return family.error(
            405, code, f"{method} is not allowed on {path}.", parameters={"method": method}
        )
    if status == 413:
        return family.error(
            413, code, "The request body is larger than the emulator accepts." + suffix
        )
    if status == 431:
        return family.error(
            431, code, "The request's headers are larger than the emulator accepts." + suffix
        )
    if status == 408:
        return family.error(408, code, "The request body did not arrive in time." + suffix)
    if status < 500:
        return family.error(status, code, "The request could not be read." + suffix)
    return family.error(500, code, "The emulator failed to handle this request; see its log.")


# The variable that raises the emulator-wide body limit (Settings.max_body_bytes).
BODY_LIMIT_SETTING = "EMULATOR_MAX_BODY_BYTES"


def too_large(
    family: ErrorFamily, path: str, method: str, limit: int, setting: str = BODY_LIMIT_SETTING
) -> ApiError:
    """The 413 for a body over `limit` bytes, naming the limit and what raises it (`setting`
    "" for a fixed limit)."""
    raises = f"; set {setting} to raise it" if setting else ""
    return framework_error(
        family, 413, path, method, detail=f"The limit is {limit:,} bytes{raises}."
    )
