"""The benchmarks' hand-written h2c client (benchmarks/h2client.py) against the emulator's own
HTTP/2 server, with a small ASGI app.

Checks: concurrent streams each get their own status and body; a request body larger than the
server's stream window (1 MiB) waits for its WINDOW_UPDATEs and arrives whole; a response
larger than the frame size arrives whole; a header block split over CONTINUATION frames is
decoded (the response's END_STREAM is on its HEADERS frame); a reset stream raises `H2Error`
and the connection goes on; the HPACK literals decode back to the fields sent.
"""

from __future__ import annotations

import hashlib
import sys
from functools import partial
from pathlib import Path
from typing import Any

import hpack
import pytest
import trio

from emulator.platform.errors import FamilyMap
from emulator.transport.h2 import STREAM_WINDOW, H2Server
from emulator.transport.httpcommon import ServerLimits

# benchmarks/ is not an installed package: import it from the checkout, as its scripts do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.h2client import H2Connection, H2Error, encode_fields

LIMITS = ServerLimits(max_header_bytes=64 * 1024, keep_alive_timeout=75.0, head_timeout=30.0)
BIG_HEADER = b"v" * 40_000  # more than one 16 KiB frame: HEADERS plus CONTINUATION


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        body += message["body"]
        if not message["more_body"]:
            break
    path = scope["path"]
    if path == "/reset":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        return  # a response the app abandons: the server resets the stream
    headers: list[tuple[bytes, bytes]] = [(b"x-echo-path", path.encode())]
    if path == "/big-head":
        headers.append((b"x-big", BIG_HEADER))
        out = b""
    elif path.startswith("/size/"):
        out = bytes(range(256)) * (int(path.rsplit("/", 1)[1]) // 256)
    else:
        out = hashlib.sha256(body).hexdigest().encode() + b" " + str(len(body)).encode()
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": out})


async def test_the_client_against_the_emulator_h2_server() -> None:
    server = H2Server(app, LIMITS, FamilyMap())
    # A client that loses a stream's end would wait forever: fail instead.
    with trio.fail_after(30):
        await exercise(server)


async def exercise(server: H2Server) -> None:
    async def handler(stream: trio.SocketStream) -> None:
        await server.serve_connection(stream, scheme="http")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        conn = await H2Connection.open(nursery, "127.0.0.1", port)
        results: dict[int, tuple[int, bytes]] = {}

        async def ask(n: int) -> None:
            body = bytes([n % 251]) * (n * 997)
            response = await conn.request("POST", f"/echo/{n}", [(b"x-n", str(n).encode())], body)
            results[n] = (response.status, response.body)

        async with trio.open_nursery() as asks:
            for n in range(40):
                asks.start_soon(ask, n)
        for n in range(40):
            body = bytes([n % 251]) * (n * 997)
            assert results[n] == (201, f"{hashlib.sha256(body).hexdigest()} {len(body)}".encode())

        upload = bytes(range(256)) * (3 * STREAM_WINDOW // 256 + 7)
        response = await conn.request("PUT", "/upload", body=upload)
        assert response.body == f"{hashlib.sha256(upload).hexdigest()} {len(upload)}".encode()

        response = await conn.request("GET", "/size/300000")
        assert response.body == bytes(range(256)) * (300000 // 256)

        response = await conn.request("GET", "/big-head")
        assert (response.status, response.body) == (201, b"")

        with pytest.raises(H2Error, match="reset"):
            await conn.request("GET", "/reset")
        assert (await conn.request("GET", "/after")).status == 201
        conn.close()
        nursery.cancel_scope.cancel()


def test_request_fields_are_plain_hpack_literals() -> None:
    fields = [(b":method", b"GET"), (b":path", b"/" + b"p" * 300), (b"x-a", b"")]
    assert hpack.Decoder().decode(encode_fields(fields), raw=True) == fields
