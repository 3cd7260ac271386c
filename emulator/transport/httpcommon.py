"""What the emulator's HTTP/1.1 (transport.h1) and HTTP/2 (transport.h2) servers share.

Owns `ServerLimits` (what one connection may hold, and for how long), `ResponseState` (what an
app has sent of one response, and whether the server adds its Content-Length), `ConnectionServer`
(the app, limits, lifespan state and open connections of one protocol's server, the drain at
shutdown and the one sweep that expires connections and stalled writes), the ASGI `http` scope
of a request, the ASGI app type and version record, the read size per `receive_some`, the
`date` header value (formatted once a second), the addresses of a connection's two ends,
`abort_socket`, the percent-decoding of a request path, and the JSON body of a framework error
(400, 408, 431, 500) in the family of the request's path.

Generic: knows nothing about Foundry; imports neither quart nor hypercorn nor an HTTP protocol
library.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from email.utils import formatdate
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import unquote

import attrs
import trio

from ..asgi import ASGIApp
from ..platform.errors import FamilyMap, framework_error

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
# Largest read per receive_some: big enough that a streamed upload moves in large pieces. The
# buffer lives only for one recv() and is shrunk to what arrived, so idle connections hold none
# of it. (A/B on scenario 5: 226-299 MiB/s against 174-236 with 256 KiB; scenario 1 no worse.)
READ_SIZE = 1024 * 1024


@attrs.frozen
class ServerLimits:
    """What one connection may hold, in bytes and seconds."""

    max_header_bytes: int
    # How long an idle keep-alive connection stays open.
    keep_alive_timeout: float
    # How long a request head may take once its first byte has arrived (HTTP/1.1).
    head_timeout: float
    # How long a write may make no progress (a client that does not read) before the
    # connection (HTTP/1.1) or the stream waiting for window (HTTP/2) is given up.
    send_timeout: float = 30.0


class ResponseState:
    """The ASGI response messages an app has sent for one request, checked once for both
    protocols: the status and headers of `http.response.start`, and whether the last body
    message has come (`finished`)."""

    __slots__ = ("finished", "headers", "started", "status")

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    def take(self, message: dict[str, Any]) -> tuple[bytes, bool] | None:
        """Record `message`: for a body message to write, (its body, whether more follows);
        None when there is nothing to write (the start, an unknown type, a body after the
        last). A body before the start, or a second start, is the app's bug: RuntimeError."""
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
            return None
        if kind != "http.response.body":
            return None
        if not self.started:
            raise RuntimeError("http.response.body before http.response.start")
        if self.finished:
            return None
        more = bool(message.get("more_body", False))
        if not more:
            self.finished = True
        return bytes(message.get("body", b"")), more

    def adds_length(self, more: bool) -> bool:
        """Whether the server adds a Content-Length the app did not give: the whole body came
        in one message, and the status has a body."""
        status = self.status
        return not more and status >= 200 and status not in (204, 304)


class ServedConnection(Protocol):
    def expire(self, now: float) -> None:
        """End a wait that has lasted longer than the limits allow."""

    def drain(self) -> None:
        """The server is shutting down: close now if idle, else after the work in hand."""


C = TypeVar("C", bound=ServedConnection)


class ConnectionServer(Generic[C]):
    """One protocol's side of every listener: one ASGI app, shared limits, open connections."""

    def __init__(
        self,
        app: ASGIApp,
        limits: ServerLimits,
        families: FamilyMap,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.families = families
        self.state = state if state is not None else {}
        self.draining = False
        self.date = DateHeader()
        self.connections: set[C] = set()

    def drain(self) -> None:
        """Stop keeping connections: idle ones close now, busy ones after their work."""
        self.draining = True
        for connection in list(self.connections):
            connection.drain()

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    async def expire_connections(self) -> None:
        """Let every connection end the waits that have lasted too long (idle past
        `keep_alive_timeout`, a head slower than `head_timeout`, a write or a stream's wait for
        window stalled past `send_timeout`): one sweep per interval for
        all connections, instead of a timer per request. Runs until cancelled."""
        limits = self.limits
        interval = min(
            1.0, limits.keep_alive_timeout / 4, limits.head_timeout / 4, limits.send_timeout / 4
        )
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for connection in list(self.connections):
                connection.expire(now)


class DateHeader:
    """The `date` header value, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


def peer_addresses(
    stream: trio.abc.Stream,
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """The (client, server) addresses of a socket stream (or a TLS stream over one)."""
    transport = getattr(stream, "transport_stream", stream)
    sock = getattr(transport, "socket", None)
    if sock is None:
        return None, None
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return None, None
    return (str(peer[0]), int(peer[1])), (str(local[0]), int(local[1]))


def abort_socket(stream: trio.abc.Stream) -> None:
    """Shut the socket under `stream` down both ways: a pending `send_all` or `receive_some`
    fails at once (BrokenResourceError or end of input) and the owner closes the connection on
    its own path. Cheaper than a cancel scope around every write."""
    transport = getattr(stream, "transport_stream", stream)
    sock = getattr(transport, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def http_scope(
    server: ConnectionServer[Any],
    *,
    http_version: str,
    method: str,
    scheme: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    addresses: tuple[tuple[str, int] | None, tuple[str, int] | None],
) -> dict[str, Any]:
    """The ASGI `http` scope of one request (`target` is the path with its query string)."""
    raw_path, _, query = target.partition(b"?")
    client, local = addresses
    return {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": http_version,
        "method": method,
        "scheme": scheme,
        "path": decoded_path(raw_path),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": local,
        "extensions": {},
        "state": dict(server.state),
    }


def decoded_path(raw_path: bytes) -> str:
    """The ASGI `path`: the raw path percent-decoded as UTF-8."""
    path = raw_path.decode("latin-1")
    if "%" in path:
        path = unquote(path, encoding="utf-8", errors="replace")
    return path


def error_json(families: FamilyMap, status: int, path: str, method: str) -> bytes:
    """The body of a framework error answered by the server itself, in the path's family."""
    error = framework_error(families.for_path(path), status, path, method)
    return json.dumps(error.body()).encode("utf-8")
