"""A request body the route never reads is bounded (issue 16, defects 1 and 2).

A Quart route that holds its request without reading the body, behind the emulator's
dispatcher (`RawDispatcher`, which bounds what Quart may buffer), served by the emulator's own
HTTP/1.1 and HTTP/2 servers and by Hypercorn. The client sends as fast as the server takes the
bytes; the server must stop taking them (TCP, or the HTTP/2 window) after a bounded amount. On
the old code every byte was read into Quart's buffer (1.5 GiB in 7 s).

"Stopped taking" is a send that makes no progress for `STALLED` seconds: a bounded wait on a
condition, and the figure checked is bytes, never time.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.events
import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config
from quart_trio import QuartTrio

from emulator.platform.errors import FamilyMap
from emulator.transport.h1 import H1Server
from emulator.transport.h2 import H2Server
from emulator.transport.httpcommon import ServerLimits
from emulator.web.rawasgi import RawDispatcher

LIMIT = 64 * 1024
CHUNK = b"x" * 65536
STALLED = 1.5
# Far more than the body limit plus every socket buffer on the way (a few MiB on loopback).
BOUND = 48 * 1024 * 1024
LIMITS = ServerLimits(max_header_bytes=64 * 1024, keep_alive_timeout=75.0, head_timeout=30.0)


def holding_app(release: trio.Event) -> Any:
    """A Quart app whose POST /hold waits for `release` and never reads its body."""
    app = QuartTrio(__name__)

    @app.post("/hold")
    async def hold() -> str:
        await release.wait()
        return "held"

    return RawDispatcher(app, [], FamilyMap(), body_limit=LIMIT)


@asynccontextmanager
async def own_server(app: Any, server_class: Any) -> AsyncIterator[int]:
    server = server_class(app, LIMITS, FamilyMap())

    async def handler(stream: trio.SocketStream) -> None:
        await server.serve_connection(stream, scheme="http")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def hypercorn_server(app: Any) -> AsyncIterator[int]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config))
        yield int(binds[0].rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


def serving(mode: str, app: Any) -> Any:
    if mode == "hypercorn":
        return hypercorn_server(app)
    return own_server(app, H2Server if mode == "h2" else H1Server)


async def sent_before_stall_h1(port: int) -> int:
    """Bytes of a chunked body the server took before it stopped taking them."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    # A small receive buffer on the client: it never reads the answer anyway.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = b"POST /hold HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    await stream.send_all(head)
    piece = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n"
    sent = 0
    while sent < BOUND:
        with trio.move_on_after(STALLED) as scope:
            await stream.send_all(piece)
        if scope.cancelled_caught:
            break
        sent += len(CHUNK)
    await trio.aclose_forcefully(stream)
    return sent


async def sent_before_stall_h2(port: int) -> int:
    """Bytes of a body the server let an HTTP/2 client send (window given back) before it
    stopped giving window."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [(":method", "POST"), (":path", "/hold"), (":scheme", "http"), (":authority", "t")],
    )
    await stream.send_all(conn.data_to_send())
    sent = 0
    while sent < BOUND:
        window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
        if window > 0:
            conn.send_data(stream_id, CHUNK[:window])
            sent += window
            await stream.send_all(conn.data_to_send())
            continue
        # No window left: wait for the server to give some back.
        with trio.move_on_after(STALLED) as scope:
            while conn.local_flow_control_window(stream_id) <= 0:
                data = await stream.receive_some(65536)
                assert data, "the server closed the connection"
                conn.receive_data(data)
                await stream.send_all(conn.data_to_send())
        if scope.cancelled_caught:
            break
    await trio.aclose_forcefully(stream)
    return sent


@pytest.mark.parametrize("mode", ["h1", "h2", "hypercorn-h1", "hypercorn-h2"])
async def test_a_body_the_route_never_reads_is_held_back_not_buffered(mode: str) -> None:
    release = trio.Event()
    with trio.fail_after(120):
        async with serving(mode.split("-")[0], holding_app(release)) as port:
            if mode.endswith("h2"):
                sent = await sent_before_stall_h2(port)
            else:
                sent = await sent_before_stall_h1(port)
            release.set()
    assert sent < BOUND
