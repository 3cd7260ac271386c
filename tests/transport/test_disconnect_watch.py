"""Noticing a client that leaves while its request waits: `RawRequest.cancelled_when_gone` on
both servers and over HTTP/2 (a reset stream calls back, no task waits), and the emulator's
HTTP/1.1 `DisconnectWatch` (transport.readiness: the socket read from one task when it becomes
readable, no task per request), which must keep a pipelined next request, close a connection
that sends too much ahead, and call back when the client closes.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
import trio.testing
from asgiserving import SERVERS, serving
from test_h2 import Client
from test_h2 import serving as h2_serving

from emulator.platform.errors import FamilyMap
from emulator.transport.readiness import ReadableSockets, available
from emulator.web.rawasgi import WATCH_EXTENSION, RawRequest

HEAD = b"POST /wait HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
NEXT = b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n"


class Waiter:
    """An app whose /wait reads its body, then waits in `cancelled_when_gone` until released
    or cancelled; any other path answers its path at once."""

    def __init__(self) -> None:
        self.waiting = trio.Event()
        self.release = trio.Event()
        self.cancelled = trio.Event()
        self.watched: list[bool] = []

    async def connect_waiting(self, port: int) -> trio.SocketStream:
        """A connection whose /wait request the app is waiting in."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(HEAD)
        await self.waiting.wait()
        return stream

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = RawRequest(scope, receive, send, {}, FamilyMap().for_path(scope["path"]))
        await raw.read_body(1024, 5.0)
        if scope["path"] != "/wait":
            await raw.respond(200, scope["path"].encode())
            return
        self.watched.append(WATCH_EXTENSION in scope["extensions"])
        async with raw.cancelled_when_gone() as gone:
            self.waiting.set()
            await self.release.wait()
        if gone.cancelled_caught:
            self.cancelled.set()
            return
        await raw.respond(200, b"released")


@pytest.mark.parametrize("server", SERVERS)
async def test_a_client_that_leaves_cancels_the_wait(server: str) -> None:
    app = Waiter()
    with trio.fail_after(10):
        async with serving(app, server) as served:
            stream = await app.connect_waiting(served.port)
            await stream.aclose()
            await app.cancelled.wait()
    assert app.watched == [server == "emulator"]


async def test_an_h2_stream_the_client_resets_cancels_the_wait() -> None:
    app = Waiter()
    with trio.fail_after(10):
        async with h2_serving(app) as (_, port):
            client = await Client.connect(port)
            stream_id = await client.request("/wait", "POST", b"hi")
            await app.waiting.wait()
            client.conn.reset_stream(stream_id)
            await client.flush()
            await app.cancelled.wait()
            await client.aclose()
    assert app.watched == [True]


async def test_a_pipelined_request_is_kept_while_the_watch_reads() -> None:
    app = Waiter()
    with trio.fail_after(10):
        async with serving(app) as served:
            stream = await app.connect_waiting(served.port)
            await stream.send_all(NEXT[:10])
            await stream.send_all(NEXT[10:])
            app.release.set()
            seen = b""
            while b"/next" not in seen:
                data = await stream.receive_some(65536)
                assert data, f"closed after {seen!r}"
                seen += data
            await stream.aclose()
    assert b"released" in seen
    assert not app.cancelled.is_set()


async def test_too_much_sent_ahead_during_the_wait_closes_the_connection() -> None:
    app = Waiter()
    with trio.fail_after(10):
        async with serving(app) as served:
            stream = await app.connect_waiting(served.port)
            await stream.send_all(b"x" * (70 * 1024))  # beyond max_header_bytes (64 KiB)
            await app.cancelled.wait()
            assert await stream.receive_some(65536) == b""
            await stream.aclose()


@pytest.mark.skipif(not available(), reason="select.epoll is Linux only")
async def test_readable_sockets_call_back_until_unwatched() -> None:
    readable = ReadableSockets()
    left, right = socket.socketpair()
    left.setblocking(False)
    calls: list[bytes] = []
    called = trio.Event()

    def on_readable() -> None:
        calls.append(left.recv(100))
        called.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(readable.run)
            readable.watch(left.fileno(), on_readable)
            right.send(b"one")
            await called.wait()
            readable.unwatch(left.fileno())
            assert len(readable) == 0
            right.send(b"two")
            await trio.testing.wait_all_tasks_blocked()
            right.close()
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    assert calls == [b"one"]
    assert left.recv(100) == b"two"
    left.close()


@pytest.mark.skipif(not available(), reason="select.epoll is Linux only")
async def test_a_closed_or_stale_descriptor_is_refused_or_taken_over() -> None:
    readable = ReadableSockets()
    left, right = socket.socketpair()
    assert readable.watch(left.fileno(), lambda: None)
    # A second watch of the same number (a stale registration) replaces the first.
    assert readable.watch(left.fileno(), lambda: None)
    assert len(readable) == 1
    readable.unwatch(left.fileno())
    fd = left.fileno()
    left.close()
    right.close()
    assert not readable.watch(fd, lambda: None)
    assert len(readable) == 0
