"""Reading request bodies safely: size limits, time limits, JSON and forms, errors in a family.

Owns the helpers every blueprint uses to turn a request body into Python data without a 500:
a body larger than the limit is a 413, a body that trickles in slower than the body timeout is
a 408, a body that is not JSON (or not UTF-8) is a 400, all in the caller's error family.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import trio
from quart import Response, request

from ..platform.errors import (
    BODY_LIMIT_SETTING,
    ApiError,
    ErrorFamily,
    framework_error,
    too_large,
)

JSON_TYPE = "application/json"


async def read_body(
    family: ErrorFamily,
    limit: int,
    deadline_seconds: float,
    *,
    setting: str = BODY_LIMIT_SETTING,
) -> bytes:
    """The whole request body, or an ApiError (413 too large, naming the limit and `setting`,
    the variable that raises it; 408 too slow).

    Callers pass `settings.max_body_bytes` and `settings.body_timeout`.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(family, request.path, request.method, limit, setting)
    chunks = bytearray()
    body = request.body
    with trio.move_on_after(deadline_seconds) as scope:
        async for chunk in body:
            chunks += chunk
            if len(chunks) > limit:
                raise too_large(family, request.path, request.method, limit, setting)
    if scope.cancelled_caught:
        raise framework_error(family, 408, request.path, request.method)
    return bytes(chunks)


def parse_json(data: bytes, family: ErrorFamily, code: str = "invalid_request") -> Any:
    """Decode a JSON document strictly (UTF-8, no NaN); ApiError 400 otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise family.error(400, code, "The request body is not valid UTF-8.") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise family.error(400, code, "The request body is not valid JSON.") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_form(data: bytes, family: ErrorFamily, code: str = "invalid_request") -> dict[str, str]:
    """Decode an application/x-www-form-urlencoded body; the last value of a repeated key wins."""
    return dict(parse_form_pairs(data, family, code))


def parse_form_pairs(
    data: bytes, family: ErrorFamily, code: str = "invalid_request"
) -> list[tuple[str, str]]:
    """The (name, value) pairs of an application/x-www-form-urlencoded body, in order and with
    repeats, for callers that must see repeated names; ApiError 400 when it cannot be read."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise family.error(400, code, "The request body is not valid UTF-8.") from None
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise family.error(400, code, "The request body is not a valid form.") from None


def mimetype_of(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower-cased and without parameters ("" if none):
    what Quart's `request.mimetype` gives, for routes served without Quart (web.rawasgi)."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip(" \t").lower()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    response = Response(body, status=status, content_type=JSON_TYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status, error.headers)
