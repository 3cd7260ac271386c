"""The request log: a bounded ring of the most recent requests, with every secret redacted.

Owns the ASGI middleware that records method, path, redacted query, status, duration, HTTP
version, route family and principal of each request, and the ring buffer behind
`GET /_emulate/requests`. Handlers name the principal with `note_principal(scope, name)`.
Bodies and headers are never recorded. Secrets are redacted by name and by pattern: a query
or path parameter (`;name=value`) whose name is in `SECRET_KEYS` or matches `SECRET_NAME`
(auth, token, key, jwt, bearer, secret, password, ...), and any value or path segment that
looks like a credential (`TOKEN_LIKE`: a JWT, a `Bearer` value, a prefixed random token such as
`foundry_...`). A recorded path and query are each cut to `MAX_TARGET` characters (a
request target may be 64 KiB). Redaction happens when the log is read (or at once for the
access log), not per request: the ring keeps each target's first `KEPT_TARGET` characters,
so it holds at most about `capacity` x 2 x `KEPT_TARGET` characters of targets, and no
secret ever leaves it unredacted.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs

from ..asgi import ASGIApp, Message, Receive, Scope, Send
from ..platform.errors import FamilyMap

access_log = logging.getLogger("emulator.access")

REDACTED = "[redacted]"
SECRET_KEYS = frozenset(
    {
        "code",
        "token",
        "access_token",
        "refresh_token",
        "client_secret",
        "code_verifier",
        "password",
        "secret",
        "id_token",
        "module_auth_token",
        "moduleauthtoken",
    }
)
# Names that mark a secret wherever they appear in a parameter's name (case-insensitive).
SECRET_NAME = re.compile(
    r"auth|token|secret|passw|pwd|api[-_]?key|apikey|access[-_]?key|jwt|bearer|credential"
    r"|session|signature|private|cookie",
    re.IGNORECASE,
)
# Values that look like a credential whatever their name: a JWT, a Bearer value, a random
# token behind a short prefix (at least 24 characters, one of them a digit).
TOKEN_LIKE = re.compile(
    r"eyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]*"
    r"|(?i:bearer)(?:\s|%20|\+)+\S+"
    r"|\b[A-Za-z]{2,16}_(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{24,}"
)
# Longest path, and longest query, recorded (characters); longer ones are cut.
MAX_TARGET = 512
TRUNCATED = "...[truncated]"
# The inspector polls these; logging them would bury the requests worth seeing.
QUIET_PREFIXES = ("/_emulate/requests", "/_emulate/state", "/_emulate/health")
QUIET_PATHS = frozenset({"/_emulate/", "/_emulate"})
# Status recorded when the client went away before an answer was sent (as nginx does).
CLIENT_CLOSED = 499
PRINCIPAL_KEY = "emulator.principal"


def note_principal(scope: Scope, name: str) -> None:
    """Tell the request log who made this request (a username or `runtime:<id>`)."""
    scope[PRINCIPAL_KEY] = name


def secret_name(name: str, extra: frozenset[str] = frozenset()) -> bool:
    lowered = name.lower()
    return lowered in SECRET_KEYS or lowered in extra or SECRET_NAME.search(name) is not None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TARGET else text[:MAX_TARGET] + TRUNCATED


def redact_query(raw: bytes, extra: frozenset[str] = frozenset()) -> str:
    """The query with every secret value replaced, cut to `MAX_TARGET` characters (`extra`:
    a service's own secret names, lower-case)."""
    if not raw:
        return ""
    # Only the start is kept, so only the start is parsed (a query may be 64 KiB).
    text = raw[: 4 * MAX_TARGET].decode("latin-1")
    try:
        pairs = parse_qsl(text, keep_blank_values=True)
    except ValueError:
        return REDACTED
    redacted = urlencode(
        [
            (key, REDACTED if secret_name(key, extra) or TOKEN_LIKE.search(value) else value)
            for key, value in pairs
        ]
    )
    return _cut(redacted) if len(raw) <= 4 * MAX_TARGET else redacted[:MAX_TARGET] + TRUNCATED


def _redact_parameter(match: re.Match[str]) -> str:
    name = match.group(1)
    return f";{name}={REDACTED}" if secret_name(name) else match.group(0)


PATH_PARAMETER = re.compile(r";([^;=/]+)=([^;/]*)")


def redact_path(path: str) -> str:
    """The path with credentials in it replaced (a `;name=value` parameter with a secret
    name, a segment that looks like a token), cut to `MAX_TARGET` characters."""
    path = path[: 4 * MAX_TARGET] if len(path) > 4 * MAX_TARGET else path
    if ";" in path:
        path = PATH_PARAMETER.sub(_redact_parameter, path)
    # Most paths cannot hold a token (no underscore, no JWT, no Bearer): skip the search.
    if "_" in path or "eyJ" in path or "earer" in path:
        path = TOKEN_LIKE.sub(REDACTED, path)
    return _cut(path)


@attrs.frozen
class RequestRecord:
    sequence: int
    time: float
    method: str
    path: str
    query: str
    status: int
    duration_ms: float
    http_version: str
    family: str
    principal: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "durationMs": round(self.duration_ms, 3),
            "httpVersion": self.http_version,
            "family": self.family,
            "principal": self.principal,
        }


# What the middleware stores per request; a RequestRecord is made only when someone reads the
# log (redacting and naming the family then), so serving a request costs one tuple:
# (sequence, time, method, path, query, status, duration ms, HTTP version, principal), the
# path and query cut to KEPT_TARGET characters (bytes) and not yet redacted.
_Entry = tuple[int, float, str, str, bytes, int, float, str, "str | None"]
# Enough of a target to redact it as the whole would be, and to know it was longer.
KEPT_TARGET = 4 * MAX_TARGET + 1


def _lower_names(names: frozenset[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)


@attrs.define
class RequestLog:
    capacity: int = 1000
    # Also write one redacted line per request to the `emulator.access` logger (--access-log).
    access_log: bool = False
    # The service whose listener this log records (access-log lines name it).
    service: str = ""
    # The service's own secret query names (ServiceInstance.secret_names), lower-cased.
    secret_names: frozenset[str] = attrs.field(default=frozenset(), converter=_lower_names)
    records: deque[_Entry] = attrs.field(init=False)
    sequence: int = 0
    families: FamilyMap = attrs.field(factory=FamilyMap, init=False)

    def __attrs_post_init__(self) -> None:
        self.records = deque(maxlen=max(self.capacity, 1))

    def clear(self) -> None:
        self.records.clear()

    def recent(self, limit: int | None = None) -> list[RequestRecord]:
        items = list(self.records)
        if limit is not None:
            items = items[-limit:]
        return [self._record(entry) for entry in items]

    def _record(self, entry: _Entry) -> RequestRecord:
        sequence, at, method, path, query, status, duration_ms, http_version, principal = entry
        return RequestRecord(
            sequence=sequence,
            time=at,
            method=method,
            path=redact_path(path),
            query=redact_query(query, self.secret_names),
            status=status,
            duration_ms=duration_ms,
            http_version=http_version,
            family=self.families.for_path(path).name,
            principal=principal,
        )

    def _append(self, scope: Scope, path: str, status: int, started: float) -> None:
        self.sequence += 1
        entry = (
            self.sequence,
            time.time(),
            scope.get("method", ""),
            path if len(path) <= KEPT_TARGET else path[:KEPT_TARGET],
            query[:KEPT_TARGET]
            if len(query := scope.get("query_string", b"")) > KEPT_TARGET
            else bytes(query),
            status,
            (time.perf_counter() - started) * 1000,
            scope.get("http_version", ""),
            scope.get(PRINCIPAL_KEY),
        )
        if self.capacity:
            self.records.append(entry)
        if self.access_log:
            # Built from the redacted record, never from headers (they carry credentials).
            record = self._record(entry)
            access_log.info(
                "%s %s%s HTTP/%s %d %.1fms %s",
                record.method,
                record.path,
                f"?{record.query}" if record.query else "",
                record.http_version,
                status,
                record.duration_ms,
                record.principal or "-",
            )

    def middleware(self, app: ASGIApp, families: FamilyMap) -> ASGIApp:
        self.families = families

        async def logged(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] != "http" or path in QUIET_PATHS or path.startswith(QUIET_PREFIXES):
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            # [status, recorded]: one small list instead of closures over nonlocals.
            state = [CLIENT_CLOSED, False]

            async def observed_send(message: Message) -> None:
                kind = message["type"]
                if kind == "http.response.start":
                    state[0] = int(message["status"])
                elif kind == "http.response.body" and not message.get("more_body"):
                    # Recorded before the last bytes leave, so a client that has its answer
                    # always finds the request in the log.
                    state[1] = True
                    self._append(scope, path, state[0], started)
                await send(message)

            try:
                await app(scope, receive, observed_send)
            finally:
                if not state[1]:
                    self._append(scope, path, state[0], started)

        return logged
