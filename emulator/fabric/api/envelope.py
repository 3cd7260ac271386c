"""Fabric's wire envelope: `{meta, context, data, error, links}` on every JSON answer.

Owns `Call` (one request as the handlers see it: the raw request, its request and trace ids,
the authenticated caller and the organization/team the answer's `context` names), `Answer`
(what a handler returns: status, data, links, headers), the rendering of both into the envelope
with `X-Request-Id`, and `error_answer`, the one place a domain error (`FabricError`) or an
HTTP-level `ApiError` becomes a status, `error.code` and message. Knows no routes.
Imports the generic raw-ASGI request type; nothing from quart or yaml.
"""

from __future__ import annotations

import datetime
import json
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs

from ...asgi import Headers
from ...platform.errors import ApiError
from ...web.rawasgi import RawRequest
from ..core.auth import Caller
from ..core.errors import FabricError, RateLimited

VERSION = "1.0"

# HTTP-level failures (no route, wrong method, body too large, ...) in Fabric's vocabulary.
FRAMEWORK_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    431: "bad_request",
    503: "unavailable",
}


def framework_code(status: int) -> str:
    if status >= 500 and status != 503:
        return "internal_error"
    return FRAMEWORK_CODES.get(status, "bad_request")


# The last whole second formatted, as (epoch second, `2026-03-19T12:00:00`): timestamps come
# in runs from the same second (a job's nine events), so only the fraction changes.
_second: tuple[int, str] = (0, "1970-01-01T00:00:00")


def rfc3339(epoch: float | None) -> str | None:
    """`2026-03-19T12:00:00.123456Z` (UTC, `Z`), or None; the same string as
    `datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")` with `Z` (the
    fraction rounded half to even, as datetime does), at about a third of its cost (every
    event and answer has timestamps)."""
    global _second
    if epoch is None:
        return None
    fraction, whole = math.modf(epoch)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    cached = _second
    if cached[0] != second:
        moment = datetime.datetime.fromtimestamp(second, tz=datetime.UTC)
        cached = _second = (second, moment.isoformat()[:-6])
    return f"{cached[1]}.{micros:06d}Z"


@attrs.define
class Call:
    """One request being answered."""

    raw: RawRequest
    request_id: str
    trace_id: str
    now: float
    caller: Caller | None = None
    organization_id: str | None = None
    team_id: str | None = None

    @property
    def path(self) -> str:
        return self.raw.path

    def query(self) -> dict[str, str]:
        text = bytes(self.raw.scope.get("query_string", b"")).decode("latin-1")
        return dict(parse_qsl(text, keep_blank_values=True))

    def principal(self) -> Caller:
        assert self.caller is not None, "route is not public"
        return self.caller

    def name_org(self, organization_id: str | None) -> None:
        """Record the org the request names, unless the caller's API key fixes it."""
        if self.caller is not None and self.caller.key_org is not None:
            self.organization_id = self.caller.key_org
        elif organization_id is not None and self.organization_id is None:
            self.organization_id = organization_id


@attrs.frozen
class Answer:
    status: int
    data: Any
    links: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


def envelope(
    call: Call, status: int, data: Any, error: dict[str, Any] | None, links: Mapping[str, Any]
) -> dict[str, Any]:
    caller = call.caller
    return {
        "meta": {
            "request_id": call.request_id,
            "trace_id": call.trace_id,
            "timestamp": rfc3339(call.now),
            "status": status,
            "version": VERSION,
        },
        "context": {
            "principal_id": None if caller is None else caller.principal_id,
            "organization_id": call.organization_id
            if caller is None or caller.key_org is None
            else caller.key_org,
            "team_id": call.team_id,
        },
        "data": data,
        "error": error,
        "links": dict(links),
    }


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _headers(call: Call, extra: Mapping[str, str]) -> Headers:
    headers: Headers = [
        (b"content-type", b"application/json"),
        (b"x-request-id", call.request_id.encode("ascii")),
    ]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    return headers


async def send_answer(call: Call, answer: Answer) -> None:
    links = answer.links if answer.links is not None else {"self": call.path}
    body = encode(envelope(call, answer.status, answer.data, None, links))
    await call.raw.respond(answer.status, body, _headers(call, answer.headers))


@attrs.frozen
class ErrorAnswer:
    status: int
    code: str
    message: str
    details: dict[str, Any] | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)


def error_answer(error: Exception) -> ErrorAnswer | None:
    """The translation of every error Fabric answers with; None for a bug (answered 500)."""
    if isinstance(error, FabricError):
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else {}
        return ErrorAnswer(error.status, error.code, error.message, error.details, headers)
    if isinstance(error, ApiError):
        return ErrorAnswer(
            error.status, framework_code(error.status), error.description, None, error.headers
        )
    return None


async def send_error(call: Call, answer: ErrorAnswer) -> None:
    error: dict[str, Any] = {"code": answer.code, "message": answer.message}
    if answer.details:
        error["details"] = answer.details
    body = encode(envelope(call, answer.status, None, error, {}))
    await call.raw.respond(answer.status, body, _headers(call, answer.headers))


def new_call(raw: RawRequest, now: float, new_id: Callable[[], str]) -> Call:
    """A call with a fresh request id; a valid incoming `X-Trace-Id` is kept as the trace id."""
    trace = raw.header(b"x-trace-id")
    return Call(raw, new_id(), trace if trace is not None and _is_uuid(trace) else new_id(), now)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
