"""The emulator's own HTTP/2 server (transport.h2) against hostile clients (issue 16).

Each test plays one abuse at the frame level over a real socket and checks the bound the
server promises in its module docstring: an oversized frame refused at its header, floods of
cheap frames and rapid reset answered with GOAWAY (ENHANCE_YOUR_CALM) before the app sees the
reset streams, extra streams refused one by one, a stream starved of window reset, a client
that does not read cut off. Waits are bounded deadlines on conditions, never sleeps.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import hpack
import pytest
import trio
from emulatorrun import StartEmulator

from emulator.platform.errors import FamilyMap
from emulator.transport import h2 as h2server
from emulator.transport import h2meter
from emulator.transport.h2 import H2Server
from emulator.transport.httpcommon import ServerLimits

App = Callable[[dict[str, Any], Any, Any], Any]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE = 8
END_STREAM, END_HEADERS = 0x1, 0x4
ENHANCE_YOUR_CALM, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0xB, 0x6, 0x7, 0x8
# Generous: every wait here ends in well under a second on a quiet machine.
DEADLINE = 20
LIMITS = ServerLimits(
    max_header_bytes=64 * 1024, keep_alive_timeout=75.0, head_timeout=30.0, send_timeout=0.5
)


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream_id)
        + payload
    )


def settings(**values: int) -> bytes:
    codes = {"initial_window_size": 0x4, "max_concurrent_streams": 0x3}
    payload = b"".join(struct.pack(">HI", codes[name], value) for name, value in values.items())
    return frame(SETTINGS, 0, 0, payload)


@attrs.frozen
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def error_code(self) -> int:
        offset = 4 if self.kind == GOAWAY else 0
        return int(struct.unpack(">I", self.payload[offset : offset + 4])[0])


class RawClient:
    """Frames written as bytes, frames read back one by one; no flow control of its own."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.encoder = hpack.Encoder()
        self.buffer = b""
        self.closed = False
        self.next_stream = 1

    @classmethod
    async def connect(cls, port: int, first: bytes = b"") -> RawClient:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        await client.send(PREFACE + (first or settings()))
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def headers(self, path: str = "/", end: bool = True) -> tuple[int, bytes]:
        stream_id = self.next_stream
        self.next_stream += 2
        block = self.encoder.encode(
            [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "t")]
        )
        flags = END_HEADERS | (END_STREAM if end else 0)
        return stream_id, frame(HEADERS, flags, stream_id, block)

    async def next_frame(self) -> Frame | None:
        """The next frame from the server; None once it has closed the connection."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
                    stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    return Frame(head[3], head[4], stream_id, head[9:])
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            if not data:
                self.closed = True
                return None
            self.buffer += data

    async def until(self, wanted: Callable[[Frame], bool]) -> Frame | None:
        """The first frame `wanted` accepts, or None if the server closed first."""
        while (received := await self.next_frame()) is not None:
            if wanted(received):
                return received
        return None


@attrs.define
class Watch:
    """Something changed (a connection ended, a request ended): wait on conditions, not time."""

    changed: trio.Event = attrs.Factory(trio.Event)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self.changed.wait()


WATCH = Watch()


@asynccontextmanager
async def serving(app: App, limits: ServerLimits = LIMITS) -> AsyncIterator[tuple[H2Server, int]]:
    server = H2Server(app, limits, FamilyMap())

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await server.serve_connection(stream, scheme="http")
        finally:
            WATCH.poke()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        nursery.start_soon(server.expire_connections)
        yield server, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@attrs.define
class CountingApp:
    """Answers "ok", counting the requests it saw; `hold` keeps every request waiting until it
    is set or the client goes away (as the emulator's long-polls do)."""

    calls: int = 0
    done: int = 0
    hold: trio.Event | None = None
    body: bytes = b"ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        try:
            await self._answer(scope, receive, send)
        finally:
            self.done += 1
            WATCH.poke()

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        hold = self.hold
        if hold is not None and scope["path"] != "/good":
            gone = False

            async def watch(cancel_scope: trio.CancelScope) -> None:
                nonlocal gone
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone = True
                cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, nursery.cancel_scope)
                await hold.wait()
                nursery.cancel_scope.cancel()
            if gone:
                return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = b"ok" if scope["path"] == "/good" else self.body
        await send({"type": "http.response.body", "body": body})


async def served_by_a_good_client(port: int) -> bool:
    """A well-behaved client on its own connection gets its answer."""
    client = await RawClient.connect(port)
    stream_id, request = client.headers("/good")
    await client.send(request)
    ended = await client.until(
        lambda f: f.stream_id == stream_id and f.kind == DATA and bool(f.flags & END_STREAM)
    )
    await client.stream.aclose()
    return ended is not None and ended.payload == b"ok"


async def test_a_frame_longer_than_the_maximum_is_refused_at_its_header() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(CountingApp()) as (_server, port):
            client = await RawClient.connect(port)
            stream_id, request = client.headers(end=False)
            # Announce a 16 MiB DATA frame and send only its header: h2 would wait for all of it.
            await client.send(
                request + struct.pack(">I", 16 * 1024 * 1024 - 1)[1:] + bytes((DATA, 0))
            )
            await client.send(struct.pack(">I", stream_id))
            goaway = await client.until(lambda f: f.kind == GOAWAY)
            assert goaway is not None
            assert goaway.error_code == FRAME_SIZE_ERROR
            assert await served_by_a_good_client(port)


FLOODS = {
    "ping": lambda i: frame(PING, 0, 0, struct.pack(">Q", i)),
    "settings": lambda i: settings(),
    "empty-data": lambda i: frame(DATA, 0, 1, b""),
    "window-update": lambda i: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)),
    "priority": lambda i: frame(PRIORITY, 0, 3 + 2 * (i % 100), struct.pack(">IB", 0, 15)),
}


@pytest.mark.parametrize("kind", sorted(FLOODS))
async def test_a_flood_of_cheap_frames_gets_goaway_enhance_your_calm(kind: str) -> None:
    make = FLOODS[kind]
    with trio.fail_after(DEADLINE):
        async with serving(CountingApp(hold=trio.Event())) as (server, port):
            client = await RawClient.connect(port)
            # A stream kept open, for the DATA frames to go to.
            _, request = client.headers(end=False)
            await client.send(request)
            flood = b"".join(make(i) for i in range(5000))
            async with trio.open_nursery() as nursery:
                # The client does not read while it floods (send in the background).
                nursery.start_soon(client.send, flood)
                goaway = await client.until(lambda f: f.kind == GOAWAY)
            assert goaway is not None
            assert goaway.error_code == ENHANCE_YOUR_CALM
            assert await client.until(lambda f: False) is None
            assert await served_by_a_good_client(port)
            await WATCH.until(lambda: server.open_connections == 0)


async def test_rapid_reset_gets_goaway_and_reset_streams_never_reach_the_app() -> None:
    app = CountingApp()
    with trio.fail_after(DEADLINE):
        async with serving(app) as (_server, port):
            client = await RawClient.connect(port)
            pairs = []
            for _ in range(5000):
                stream_id, request = client.headers()
                pairs.append(request + frame(RST_STREAM, 0, stream_id, struct.pack(">I", CANCEL)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send, b"".join(pairs))
                goaway = await client.until(lambda f: f.kind == GOAWAY)
            assert goaway is not None
            assert goaway.error_code == ENHANCE_YOUR_CALM
            # The work a reset stream costs is bounded: most never ran the app.
            assert app.calls <= h2meter.CONTROL_FRAMES_PER_SECOND
            assert await served_by_a_good_client(port)


async def test_streams_beyond_the_limit_are_refused_and_the_connection_lives() -> None:
    app = CountingApp(hold=trio.Event())
    limit = h2server.MAX_CONCURRENT_STREAMS
    with trio.fail_after(DEADLINE):
        async with serving(app) as (_server, port):
            client = await RawClient.connect(port)
            requests = [client.headers() for _ in range(limit + 5)]
            await client.send(b"".join(request for _, request in requests))
            extra = {stream_id for stream_id, _ in requests[limit:]}
            refused: set[int] = set()
            while refused != extra:
                reset = await client.until(lambda f: f.kind in (RST_STREAM, GOAWAY))
                assert reset is not None
                assert reset.kind == RST_STREAM
                assert reset.error_code == REFUSED_STREAM
                refused.add(reset.stream_id)
            assert app.hold is not None
            app.hold.set()
            answered = 0
            while answered < limit:
                ended = await client.until(lambda f: bool(f.flags & END_STREAM))
                assert ended is not None
                answered += 1
            assert app.calls == limit


async def test_a_stream_the_client_gives_no_window_is_reset_and_released() -> None:
    app = CountingApp(body=b"x" * 100_000)
    with trio.fail_after(DEADLINE):
        async with serving(app) as (server, port):
            client = await RawClient.connect(port, settings(initial_window_size=0))
            ids = []
            for _ in range(20):
                stream_id, request = client.headers()
                ids.append(stream_id)
                await client.send(request)
            reset: set[int] = set()
            while reset != set(ids):
                received = await client.until(lambda f: f.kind in (RST_STREAM, GOAWAY))
                assert received is not None
                assert received.kind == RST_STREAM
                assert received.error_code == CANCEL
                reset.add(received.stream_id)
            (connection,) = server.connections
            await WATCH.until(lambda: app.done == len(ids))
            assert not connection.streams
            assert not connection.window_waiters
            assert await served_by_a_good_client(port)


async def test_a_client_that_never_reads_is_cut_off() -> None:
    app = CountingApp(body=b"x" * (16 * 1024 * 1024))
    with trio.fail_after(DEADLINE):
        async with serving(app) as (server, port):
            client = await RawClient.connect(port)
            # Open the windows wide, then never read: the server's writes stall.
            window = struct.pack(">I", 2**31 - 1 - 65535)
            opening = settings(initial_window_size=2**31 - 1) + frame(WINDOW_UPDATE, 0, 0, window)
            _stream_id, request = client.headers()
            await client.send(opening + request)
            await WATCH.until(lambda: server.open_connections == 0)
            assert await served_by_a_good_client(port)


# On Hypercorn (the compatibility patch applies the same meter) -----------------------------------


async def answered_by_the_emulator(port: int) -> bool:
    client = await RawClient.connect(port)
    stream_id, request = client.headers("/_emulate/health")
    await client.send(request)
    ended = await client.until(lambda f: f.stream_id == stream_id and bool(f.flags & END_STREAM))
    await client.stream.aclose()
    return ended is not None and ended.kind in (DATA, HEADERS)


@pytest.mark.parametrize("kind", ["ping", "settings", "rapid-reset", "oversized-frame"])
async def test_hypercorn_mode_answers_abuse_with_goaway(
    start_emulator: StartEmulator, kind: str
) -> None:
    running = await start_emulator(http_server="hypercorn")
    port = int(running.http_url.rsplit(":", 1)[1])
    with trio.fail_after(DEADLINE):
        client = await RawClient.connect(port)
        if kind == "oversized-frame":
            stream_id, request = client.headers("/_emulate/health", end=False)
            announced = struct.pack(">I", 16 * 1024 * 1024 - 1)[1:] + bytes((DATA, 0))
            attack = request + announced + struct.pack(">I", stream_id)
            expected = FRAME_SIZE_ERROR
        elif kind == "rapid-reset":
            pairs = []
            for _ in range(3000):
                stream_id, request = client.headers("/_emulate/health")
                pairs.append(request + frame(RST_STREAM, 0, stream_id, struct.pack(">I", CANCEL)))
            attack = b"".join(pairs)
            expected = ENHANCE_YOUR_CALM
        else:
            attack = b"".join(FLOODS[kind](i) for i in range(5000))
            expected = ENHANCE_YOUR_CALM
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.send, attack)
            goaway = await client.until(lambda f: f.kind == GOAWAY)
            nursery.cancel_scope.cancel()
        assert goaway is not None
        assert goaway.error_code == expected
        assert await answered_by_the_emulator(port)


# Header blocks: bounded in bytes, not in frames ---------------------------------------------------


def split_block(client: RawClient, path: str, frames: int) -> bytes:
    """A request whose header block is split into `frames` frames (HEADERS + CONTINUATIONs)."""
    stream_id = client.next_stream
    client.next_stream += 2
    block = client.encoder.encode(
        [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "t")]
        + [("x-pad", "p" * 40)] * frames
    )
    size = len(block) // frames + 1
    pieces = [block[i : i + size] for i in range(0, len(block), size)]
    out = frame(HEADERS, END_STREAM, stream_id, pieces[0])
    for index, piece in enumerate(pieces[1:], start=1):
        out += frame(9, END_HEADERS if index == len(pieces) - 1 else 0, stream_id, piece)
    return out


async def test_a_legal_header_block_in_more_than_64_frames_is_served() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(CountingApp()) as (_server, port):
            client = await RawClient.connect(port)
            await client.send(split_block(client, "/good", 100))
            ended = await client.until(
                lambda f: f.kind in (GOAWAY, RST_STREAM) or (f.kind == DATA and f.stream_id == 1)
            )
            assert ended is not None
            assert ended.kind == DATA
            assert ended.payload == b"ok"


async def test_a_header_block_of_many_empty_frames_is_refused() -> None:
    with trio.fail_after(DEADLINE):
        async with serving(CountingApp()) as (_server, port):
            client = await RawClient.connect(port)
            stream_id, _ = client.headers()
            flood = frame(HEADERS, END_STREAM, stream_id) + frame(9, 0, stream_id) * 5000
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send, flood)
                goaway = await client.until(lambda f: f.kind == GOAWAY)
            assert goaway is not None
            assert await served_by_a_good_client(port)


def test_a_flood_is_judged_at_the_frame_that_breaks_the_bound() -> None:
    """A read holding a flood is not walked to its end: the meter stops at the first frame over
    the budget (a 1 MiB read of PRIORITY frames is some 75,000 frames to walk otherwise). The
    oversized frame after the flood is never reached."""
    priority = frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 15))
    flood = priority * (h2meter.CONTROL_FRAMES_PER_SECOND + 1)
    oversized = struct.pack(">I", 2**20)[1:] + bytes((0, 0)) + struct.pack(">I", 1)
    meter = h2meter.FrameMeter(header_limit=64 * 1024)
    with pytest.raises(h2meter.Abuse) as raised:
        meter.scan(PREFACE + flood + oversized, now=0.0)
    assert raised.value.code == ENHANCE_YOUR_CALM
