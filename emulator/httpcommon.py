"""What the emulator's HTTP/1.1 (emulator.h1) and HTTP/2 (emulator.h2) servers share.

Owns the ASGI app type and version record, the read size per `receive_some`, the `date` header
value (formatted once a second), the addresses of a connection's two ends, the percent-decoding
of a request path, and the JSON body of a framework error (400, 408, 431, 500) in the family of
the request's path.

Generic: knows nothing about Foundry; imports neither quart nor hypercorn nor an HTTP protocol
library.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote

import trio

from .errors import FamilyMap, framework_error

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.3"}
# Largest read per receive_some: big enough that a streamed upload moves in large pieces.
READ_SIZE = 256 * 1024


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
