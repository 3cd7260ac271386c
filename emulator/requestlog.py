"""The request log: a bounded ring of the most recent requests, with every secret redacted.

Owns the ASGI middleware that records method, path, redacted query, status, duration, HTTP
version, route family and principal of each request, and the ring buffer behind
`GET /_emulate/requests`. Handlers name the principal with `note_principal(scope, name)`.
Bodies and headers are never recorded; query values of secret-bearing keys are replaced.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs

from .errors import FamilyMap

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

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
# The inspector polls these; logging them would bury the requests worth seeing.
QUIET_PREFIXES = ("/_emulate/requests", "/_emulate/state", "/_emulate/health")
QUIET_PATHS = frozenset({"/_emulate/", "/_emulate"})
# Status recorded when the client went away before an answer was sent (as nginx does).
CLIENT_CLOSED = 499
PRINCIPAL_KEY = "emulator.principal"


def note_principal(scope: Scope, name: str) -> None:
    """Tell the request log who made this request (a username or `runtime:<id>`)."""
    scope[PRINCIPAL_KEY] = name


def redact_query(raw: bytes) -> str:
    if not raw:
        return ""
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    except ValueError:
        return REDACTED
    return urlencode(
        [(key, REDACTED if key.lower() in SECRET_KEYS else value) for key, value in pairs]
    )


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


@attrs.define
class RequestLog:
    capacity: int = 1000
    records: deque[RequestRecord] = attrs.field(init=False)
    sequence: int = 0

    def __attrs_post_init__(self) -> None:
        self.records = deque(maxlen=max(self.capacity, 1))

    def clear(self) -> None:
        self.records.clear()

    def recent(self, limit: int | None = None) -> list[RequestRecord]:
        items = list(self.records)
        return items if limit is None else items[-limit:]

    def middleware(self, app: ASGIApp, families: FamilyMap) -> ASGIApp:
        async def logged(scope: Scope, receive: Receive, send: Send) -> None:
            path = scope.get("path", "")
            if scope["type"] != "http" or path in QUIET_PATHS or path.startswith(QUIET_PREFIXES):
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = CLIENT_CLOSED
            recorded = False

            def record() -> None:
                nonlocal recorded
                recorded = True
                self.sequence += 1
                self.records.append(
                    RequestRecord(
                        sequence=self.sequence,
                        time=time.time(),
                        method=scope.get("method", ""),
                        path=path,
                        query=redact_query(scope.get("query_string", b"")),
                        status=status,
                        duration_ms=(time.perf_counter() - started) * 1000,
                        http_version=scope.get("http_version", ""),
                        family=families.for_path(path).name,
                        principal=scope.get(PRINCIPAL_KEY),
                    )
                )

            async def observed_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                elif message["type"] == "http.response.body" and not message.get("more_body"):
                    # Recorded before the last bytes leave, so a client that has its answer
                    # always finds the request in the log.
                    record()
                await send(message)

            try:
                await app(scope, receive, observed_send)
            finally:
                if not recorded:
                    record()

        return logged
