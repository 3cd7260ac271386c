"""HTTP/2 connections served by the emulator itself: the h2 library on trio, calling the ASGI
app directly.

Owns everything about an HTTP/2 connection (h2c with prior knowledge, whose preface the
HTTP/1.1 side sniffed, or ALPN "h2" over TLS): one reader feeding the h2 state machine, one
task per stream running the ASGI `http` exchange, flow control both ways (a request body is
acknowledged only when the app has taken it, so a slow reader holds the sender; a response
waits for the peer's window), one writer that sends every frame ready in the same scheduler
pass in a single `send_all`, and closing: at the keep-alive timeout (no open stream), when the
client goes away or breaks the protocol (GOAWAY, never a traceback), and at shutdown
(`H2Server.drain`: idle connections get GOAWAY and close at once, busy ones when their last
stream ends).

Response trailers (the ASGI `http.response.trailers` extension, advertised in every scope) let a
raw route serve gRPC: the stream stays open after the last body until the trailers come, and a
response without a body goes out as one HEADERS frame with its trailers (Trailers-Only).

A response the app starts but does not finish is reset (RST_STREAM), so the client sees it end;
an app that answers nothing gets a 500 in the family of the path, as on HTTP/1.1.

Defences against a hostile client, each a bound (the figures are the constants below):

- Request bodies: the client may send at most `STREAM_WINDOW` (1 MiB) per stream and
  `CONNECTION_WINDOW` (4 MiB) per connection ahead of what the app has read; window is given
  back only as the app takes the bytes.
- Frames: `FrameMeter` walks the 9-byte frame headers of every read before h2 sees them. A
  frame longer than `MAX_FRAME_SIZE` ends the connection with FRAME_SIZE_ERROR at its header
  (h2 itself would first buffer up to 16 MiB of it), a header block (HEADERS plus
  CONTINUATION) longer than twice `max_header_bytes` ends it too, and the bytes of one read
  are handed to h2 `BATCH_FRAMES` frames at a time with a checkpoint between batches, so one
  connection flooding frames cannot keep the others waiting.
- Cheap frames (PING, SETTINGS, PRIORITY, empty DATA, WINDOW_UPDATE beyond two per DATA
  frame the server sent, and RST_STREAM at `RESET_WEIGHT` each) are counted per connection
  and second; past `CONTROL_FRAMES_PER_SECOND` the connection gets GOAWAY with
  ENHANCE_YOUR_CALM and is closed. That also bounds HTTP/2 rapid reset (CVE-2023-44487) to
  200 resets a second per connection, and a stream the client resets in the batch of frames
  that opened it, or before its task ran, never reaches the app.
- Writing: while more than `OUTBOUND_LIMIT` bytes wait to be written, the connection reads no
  more (a client that does not read its PING or SETTINGS acknowledgements stops being read).
  A write that makes no progress for `ServerLimits.send_timeout` closes the connection, and a
  stream that waits that long for the client to open its window is reset (CANCEL).
- Streams: up to `MAX_CONCURRENT_STREAMS` run at once; a client opening more gets
  REFUSED_STREAM for each extra one (the connection ends only past twice that many).

Generic: knows nothing about Foundry; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import trio

from ..web.rawasgi import BODY_EXTENSION, WATCH_EXTENSION
from .h2fields import CONNECTION_FIELDS, request_problem, trailers_problem
from .httpcommon import (
    READ_SIZE,
    ConnectionServer,
    ResponseState,
    abort_socket,
    error_json,
    http_scope,
    peer_addresses,
)

log = logging.getLogger("emulator.h2")

MAX_CONCURRENT_STREAMS = 1000
# Flow-control windows granted to the client: per stream, and for the whole connection.
STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 4 * 1024 * 1024
DEFAULT_WINDOW = 65535
# An app's send waits for the writer once this much is queued and not yet written.
HIGH_WATER = 512 * 1024
# The connection reads no more while this much waits to be written (write-side backpressure).
OUTBOUND_LIMIT = 1024 * 1024
# The largest frame a client may send (the protocol's default SETTINGS_MAX_FRAME_SIZE, which
# the server does not raise).
MAX_FRAME_SIZE = 16384
# Frames handed to h2 per scheduler pass; other connections run between batches (16 against
# 64: under rapid reset a well-behaved client's p99 went from about 170 ms to about 50 ms).
BATCH_FRAMES = 16
# Cheap frames (see the module docstring) one connection may send per second.
CONTROL_FRAMES_PER_SECOND = 1000
# What a frame of a header block counts for besides its payload (about what h2 holds per frame
# until the block ends): the bound on a header block is in bytes, so a legal block may have more
# CONTINUATION frames than h2's own fixed limit of 64, and a block of empty frames is still bound.
HEADER_FRAME_COST = 256
# How much of a request body nobody reads any more (the response is complete) is dropped
# before the stream is reset.
DISCARD_BYTES = 4 * 1024 * 1024
STATUS = {status: str(status).encode("ascii") for status in range(100, 600)}
NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
INTERNAL_ERROR = h2.errors.ErrorCodes.INTERNAL_ERROR
PROTOCOL_ERROR = h2.errors.ErrorCodes.PROTOCOL_ERROR
REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
CANCEL = h2.errors.ErrorCodes.CANCEL
ENHANCE_YOUR_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
FRAME_SIZE_ERROR = h2.errors.ErrorCodes.FRAME_SIZE_ERROR
PREFACE_SIZE = 24
# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
CHEAP_FRAMES = frozenset((PRIORITY, SETTINGS, PING))
# A RST_STREAM usually ends a stream whose head the server decoded (rapid reset): it counts
# as this many cheap frames, so a connection may reset at most 200 streams a second.
RESET_WEIGHT = 5
END_STREAM, END_HEADERS, PADDED = 0x1, 0x4, 0x8


class Abuse(Exception):
    """The client broke a bound: the connection ends with this code."""

    def __init__(self, code: h2.errors.ErrorCodes, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@attrs.define
class FrameMeter:
    """Walks the frame headers in what a client sends, without parsing payloads: where the
    batches of `BATCH_FRAMES` frames begin, and whether a bound is broken (`Abuse`)."""

    header_limit: int
    # Bytes to pass before the next frame header (the connection preface at first).
    skip: int = PREFACE_SIZE
    # The first bytes of a frame header split between two reads.
    partial: bytes = b""
    window_start: float = -1.0
    # Cheap frames counted in the current one-second window.
    cheap: int = 0
    # WINDOW_UPDATEs the server's own DATA frames have earned (two each).
    credit: int = 0
    # Bytes of the header block being received (HEADERS, then CONTINUATION frames).
    header_block: int = 0

    def scan(self, data: bytes | bytearray, now: float) -> list[int]:
        """Offsets in `data` where a new batch begins (none for a single batch)."""
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.cheap = 0
        size = len(data)
        base = 0
        if self.partial:
            base = len(self.partial)
            data = self.partial + data
            self.partial = b""
        position = self.skip
        end = base + size
        cuts: list[int] = []
        frames = 0
        cheap = self.cheap
        while position + 9 <= end:
            length = (data[position] << 16) | (data[position + 1] << 8) | data[position + 2]
            kind = data[position + 3]
            flags = data[position + 4]
            if length > MAX_FRAME_SIZE:
                raise Abuse(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if kind == DATA:
                if not flags & END_STREAM and (
                    length == 0
                    or (flags & PADDED and position + 9 < end and data[position + 9] + 1 >= length)
                ):
                    cheap += 1
            elif kind in CHEAP_FRAMES:
                cheap += 1
            elif kind == RST_STREAM:
                cheap += RESET_WEIGHT
            elif kind == WINDOW_UPDATE:
                if self.credit:
                    self.credit -= 1
                else:
                    cheap += 1
            elif kind in (HEADERS, CONTINUATION):
                # Each frame costs its bytes plus what h2 keeps per frame until the block ends.
                cost = length + HEADER_FRAME_COST
                self.header_block = cost if kind == HEADERS else self.header_block + cost
                if self.header_block > self.header_limit:
                    raise Abuse(
                        PROTOCOL_ERROR,
                        f"a header block of more than {self.header_limit} bytes",
                    )
                if flags & END_HEADERS:
                    self.header_block = 0
            if cheap > CONTROL_FRAMES_PER_SECOND:
                # Judged at the frame that breaks the bound: a flood's read (up to 1 MiB, some
                # 75,000 frames) is not walked to its end first.
                self.cheap = cheap
                raise Abuse(
                    ENHANCE_YOUR_CALM, f"more than {CONTROL_FRAMES_PER_SECOND} cheap frames"
                )
            frames += 1
            if frames > BATCH_FRAMES and position > base:
                cuts.append(position - base)
                frames = 1
            position += 9 + length
        self.cheap = cheap
        if position > end:
            self.skip = position - end
        else:
            self.skip = 0
            self.partial = bytes(data[position:end])
        return cuts


class _Settings(h2.settings.Settings):
    """The server's settings: h2 enforces twice the advertised stream limit, so that the
    server itself refuses the streams between (REFUSED_STREAM) and the connection lives on."""

    @property
    def max_concurrent_streams(self) -> int:
        return 2 * MAX_CONCURRENT_STREAMS

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


def lift_continuation_count(header_limit: int) -> None:
    """Let h2 take as many CONTINUATION frames as the byte bound of `FrameMeter` allows (h2
    refuses a block of more than 64 frames). Process-wide, and only ever raised: every HTTP/2
    server in the emulator (its own, and Hypercorn's with the compatibility patch) meters
    header blocks before h2 sees them."""
    frames = header_limit // HEADER_FRAME_COST + 1
    if frames > h2.frame_buffer.CONTINUATION_BACKLOG:
        h2.frame_buffer.CONTINUATION_BACKLOG = frames


class H2Server(ConnectionServer["_Connection"]):
    """The HTTP/2 side of every listener (at drain, see `_Connection.drain`)."""

    async def serve_connection(
        self, stream: trio.abc.Stream, *, scheme: str, initial: bytes = b""
    ) -> None:
        """Serve `stream` until it closes; `initial` holds bytes already read from it (the
        connection preface the HTTP/1.1 side sniffed)."""
        connection = _Connection(self, stream, scheme)
        self.connections.add(connection)
        try:
            await connection.run(initial)
        finally:
            self.connections.discard(connection)


class _Stream(ResponseState):
    """One request stream and its response: the ASGI `receive` and `send` callables."""

    __slots__ = (
        "awaiting_trailers",
        "body_ended",
        "chunks",
        "connection",
        "delivered_end",
        "ended_local",
        "gone",
        "head_only",
        "id",
        "on_gone",
        "recv_waiter",
        "response_done",
        "scope",
        "send_waiter",
        "sent_head",
        "trailer_fields",
        "trailers",
        "window_since",
    )

    def __init__(
        self, connection: _Connection, stream_id: int, scope: dict[str, Any], ended: bool
    ) -> None:
        super().__init__()
        self.connection = connection
        self.id = stream_id
        self.scope = scope
        self.head_only = scope["method"] == "HEAD"
        # Request body pieces the app has not taken: (data, flow-controlled length).
        self.chunks: deque[tuple[bytes, int]] = deque()
        self.body_ended = ended
        self.delivered_end = False
        # The client reset the stream or the connection is gone: sends are no-ops.
        self.gone = False
        self.sent_head = False
        self.ended_local = False
        self.response_done = False
        # The ASGI trailers extension: announced in http.response.start, the stream stays
        # open after the last body until the (last) http.response.trailers message.
        self.trailers = False
        self.awaiting_trailers = False
        self.trailer_fields: list[tuple[bytes, bytes]] = []
        self.recv_waiter: trio.Event | None = None
        self.send_waiter: trio.Event | None = None
        # When the response began waiting for the client to open its window.
        self.window_since = 0.0
        # The app's DisconnectWatch callback, called once the stream is gone.
        self.on_gone: Callable[[], None] | None = None

    def wake(self) -> None:
        if self.recv_waiter is not None:
            self.recv_waiter.set()
        if self.send_waiter is not None:
            self.send_waiter.set()
        if self.gone and self.on_gone is not None:
            gone, self.on_gone = self.on_gone, None
            gone()

    # DisconnectWatch (emulator.web.rawasgi): the stream's reset or the connection's end
    # calls back, no task waits.

    def watch_disconnect(self, gone: Callable[[], None]) -> bool:
        if self.gone:
            gone()
        else:
            self.on_gone = gone
        return True

    def unwatch_disconnect(self) -> None:
        self.on_gone = None

    def take_unread(self) -> int:
        """Drop the body pieces nobody will read; their flow-controlled length."""
        size = sum(length for _, length in self.chunks)
        self.chunks.clear()
        return size

    async def receive(self) -> dict[str, Any]:
        while True:
            chunks = self.chunks
            if chunks and not self.gone:
                if len(chunks) == 1:
                    body, size = chunks.popleft()
                else:
                    body = b"".join(data for data, _ in chunks)
                    size = sum(length for _, length in chunks)
                    chunks.clear()
                self.connection.acknowledge(self.id, size)
                more = not self.body_ended
                if not more:
                    self.delivered_end = True
                return {"type": "http.request", "body": body, "more_body": more}
            if self.gone:
                return {"type": "http.disconnect"}
            if self.body_ended and not self.delivered_end:
                self.delivered_end = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if self.delivered_end and self.response_done:
                return {"type": "http.disconnect"}
            waiter = self.recv_waiter = trio.Event()
            try:
                await waiter.wait()
            finally:
                self.recv_waiter = None

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.trailers":
            await self._send_trailers(message)
            return
        if kind == "http.response.start":
            self.trailers = bool(message.get("trailers", False))
        elif kind == "http.response.body" and self.awaiting_trailers:
            return
        taken = self.take(message)
        if taken is None:
            return
        body, more = taken
        # Whether this message ends the stream (not if trailers are still to come).
        ends = not more and not self.trailers
        if not more and self.trailers:
            # The body is complete but the response is not: the trailers finish it.
            self.finished = False
            self.awaiting_trailers = True
        if self.gone or self.ended_local:
            self._done_if(ends)
            return
        connection = self.connection
        h2c = connection.h2
        try:
            if not self.sent_head:
                if self.trailers and not body:
                    # The head waits: a response with no body then goes out as one HEADERS
                    # frame together with its trailers (gRPC's Trailers-Only form).
                    await trio.lowlevel.checkpoint()
                    return
                self.sent_head = True
                end = self.head_only or (not body and ends)
                headers = self._response_headers(body, more or self.trailers)
                h2c.send_headers(self.id, headers, end_stream=end)
                if end:
                    self.ended_local = True
                    connection.flush_soon()
                    self._done_if(True)
                    return
            if body:
                await self._send_body(body, ends)
            elif ends:
                h2c.end_stream(self.id)
                self.ended_local = True
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The client reset the stream, or the connection is closing.
            self.gone = True
        connection.flush_soon()
        self._done_if(ends)
        if connection.queued > HIGH_WATER:
            await connection.wait_written()

    async def _send_trailers(self, message: dict[str, Any]) -> None:
        """`http.response.trailers`: after the last body of a response that announced them."""
        if not self.awaiting_trailers:
            raise RuntimeError("http.response.trailers without trailers announced and a last body")
        for name, value in message.get("headers", ()):
            name = bytes(name).lower()
            if name[:1] != b":" and name not in CONNECTION_FIELDS:
                self.trailer_fields.append((name, bytes(value)))
        if message.get("more_trailers", False):
            await trio.lowlevel.checkpoint()
            return
        self.awaiting_trailers = False
        self.finished = True
        connection = self.connection
        if not self.gone and not self.ended_local:
            try:
                fields = self.trailer_fields
                if not self.sent_head:
                    # Trailers-Only: status, headers and trailers in one HEADERS frame.
                    self.sent_head = True
                    fields = self._response_headers(b"", True) + fields
                connection.h2.send_headers(self.id, fields, end_stream=True)
                self.ended_local = True
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.gone = True
            connection.flush_soon()
        self._done_if(True)
        if connection.queued > HIGH_WATER:
            await connection.wait_written()
        else:
            await trio.lowlevel.checkpoint()

    def _done_if(self, done: bool) -> None:
        if done and not self.response_done:
            self.response_done = True
            if self.recv_waiter is not None:
                self.recv_waiter.set()

    async def _send_body(self, body: bytes, end: bool) -> None:
        connection = self.connection
        h2c = connection.h2
        position = 0
        total = len(body)
        while position < total:
            if self.gone:
                return
            window = h2c.local_flow_control_window(self.id)
            if window <= 0:
                connection.flush_soon()
                await self._wait_window()
                continue
            size = min(window, h2c.max_outbound_frame_size, total - position)
            piece = body if size == total else body[position : position + size]
            position += size
            last = end and position == total
            h2c.send_data(self.id, piece, end_stream=last)
            connection.meter.credit += 2
            if last:
                self.ended_local = True
            elif connection.queued > HIGH_WATER:
                connection.flush_soon()
                await connection.wait_written()

    async def _wait_window(self) -> None:
        connection = self.connection
        waiter = self.send_waiter = trio.Event()
        self.window_since = trio.current_time()
        connection.window_waiters.add(self)
        try:
            await waiter.wait()
        finally:
            self.send_waiter = None
            connection.window_waiters.discard(self)

    def _response_headers(self, body: bytes, more: bool) -> list[tuple[bytes, bytes]]:
        status = self.status
        headers = [(b":status", STATUS.get(status) or str(status).encode("ascii"))]
        sized = False
        for name, value in self.headers:
            name = name.lower()
            if name in CONNECTION_FIELDS:
                continue
            if name == b"content-length":
                sized = True
            headers.append((name, value))
        headers.append((b"date", self.connection.server.date.value()))
        if not sized and self.adds_length(more):
            headers.append((b"content-length", str(len(body)).encode("ascii")))
        return headers


class _Connection:
    """One HTTP/2 connection: the reader, the writer, and a task per stream."""

    def __init__(self, server: H2Server, stream: trio.abc.Stream, scheme: str) -> None:
        self.server = server
        self.stream = stream
        self.scheme = scheme
        self.client, self.local = peer_addresses(stream)
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # Response headers are built here from the app's (lower-cased, connection
            # headers dropped): h2 need not check them again. Request headers are checked
            # here too, in one pass (h2fields).
            validate_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        # Beyond this the header block is refused by h2 (the connection ends); below it, the
        # app answers 431 for a head larger than max_header_bytes.
        header_list_limit = 2 * server.limits.max_header_bytes
        self.h2.local_settings = _Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: header_list_limit,
            },
        )
        self.h2.decoder.max_header_list_size = header_list_limit
        self.meter = FrameMeter(header_limit=header_list_limit)
        lift_continuation_count(header_list_limit)
        # When the write in progress began (None: no write in progress).
        self._write_since: float | None = None
        # Streams whose app is running.
        self.streams: dict[int, _Stream] = {}
        # Streams whose response is complete while the client still sends a body: bytes dropped.
        self.discarding: dict[int, int] = {}
        self.window_waiters: set[_Stream] = set()
        self.idle_since = trio.current_time()
        # Bytes taken from h2, not yet written, and how many.
        self._out: list[bytes] = []
        self.queued = 0
        self._wake_writer: trio.Event | None = None
        self._written: trio.Event | None = None
        self.closing = False
        self.broken = False
        self._ending = False
        self._read_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    # Writing ---------------------------------------------------------------------------------

    def flush_soon(self) -> None:
        """Queue whatever h2 has to send; the writer sends everything queued in this scheduler
        pass in one write."""
        data = self.h2.data_to_send()
        if data:
            self._queue(data)

    def _queue(self, data: bytes) -> None:
        if self.broken:
            return
        self._out.append(data)
        self.queued += len(data)
        if self._wake_writer is not None:
            self._wake_writer.set()

    async def wait_written(self) -> None:
        """Wait until the writer has written what is queued (or the connection is gone)."""
        while self.queued > HIGH_WATER and not self.broken:
            if self._written is None:
                self._written = trio.Event()
            await self._written.wait()

    async def _write_loop(self) -> None:
        stream = self.stream
        while True:
            if not self._out:
                if self._ending or self.broken:
                    return
                self._wake_writer = trio.Event()
                await self._wake_writer.wait()
                self._wake_writer = None
                continue
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out.clear()
            self.queued = 0
            self._write_since = trio.current_time()
            try:
                await stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._lost()
            finally:
                self._write_since = None
                if self._written is not None:
                    self._written.set()
                    self._written = None

    # Reading ---------------------------------------------------------------------------------

    async def run(self, initial: bytes) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.h2.initiate_connection()
                self.h2.increment_flow_control_window(CONNECTION_WINDOW - DEFAULT_WINDOW)
                self.flush_soon()
                nursery.start_soon(self._write_loop)
                if self.server.draining:
                    self._close_now()
                with self._read_scope:
                    if not initial or await self._take(initial):
                        await self._read_loop()
                if not self.closing:
                    # The client left or broke the protocol: nobody reads the answers.
                    self._lost(keep_output=True)
                self._ending = True
                if self._wake_writer is not None:
                    self._wake_writer.set()
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _read_loop(self) -> None:
        stream = self.stream
        while True:
            try:
                data = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data or not await self._take(data):
                return

    async def _take(self, data: bytes | bytearray) -> bool:
        """Check and feed one read, a batch of frames per scheduler pass; then, if the client
        does not read what the server writes, wait for it before reading more. False when the
        connection must end."""
        try:
            cuts = self.meter.scan(data, trio.current_time())
        except Abuse as abuse:
            log.info("HTTP/2 connection from %s ended: %s", self._peer(), abuse)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(error_code=abuse.code)
            self.flush_soon()
            self._lost(keep_output=True)
            return False
        if not cuts:
            if not self._feed(data):
                return False
        else:
            view = memoryview(data)
            start = 0
            for cut in (*cuts, len(data)):
                if not self._feed(view[start:cut]):
                    return False
                start = cut
                await trio.lowlevel.checkpoint()
        while self.queued > OUTBOUND_LIMIT and not self.broken:
            if self._written is None:
                self._written = trio.Event()
            await self._written.wait()
        return True

    def _feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Hand bytes to h2 and act on its events; False when the connection must end."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            # h2 has queued a GOAWAY with the reason's code.
            log.info("HTTP/2 protocol error from %s: %s", self._peer(), error)
            self.flush_soon()
            return False
        keep = True
        # Streams the client reset in this same batch never start (rapid reset costs little).
        reset = {event.stream_id for event in events if isinstance(event, h2.events.StreamReset)}
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                if not reset or event.stream_id not in reset:
                    self._start_stream(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                self._stream_ended(event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                self._trailers(event)
            elif isinstance(event, h2.events.StreamReset):
                self._stream_reset(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._window_opened(0)
            elif isinstance(event, h2.events.ConnectionTerminated):
                keep = False
        self.flush_soon()
        return keep

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _start_stream(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if stream_id is None or event.headers is None:
            return
        if self.closing or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._reset(stream_id, REFUSED_STREAM)
            return
        problem = request_problem(event.headers)
        if problem is not None:
            log.info("malformed HTTP/2 request from %s: %s", self._peer(), problem)
            self._reset(stream_id, PROTOCOL_ERROR)
            return
        method = b"GET"
        target = b"/"
        authority = None
        has_host = False
        headers: list[tuple[bytes, bytes]] = []
        for name, value in event.headers:
            name = bytes(name)
            value = bytes(value)
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"host":
                has_host = True
            headers.append((name, value))
        if authority is not None and not has_host:
            headers.insert(0, (b"host", authority))
        scope = http_scope(
            self.server,
            http_version="2",
            method=method.decode("ascii", "replace"),
            scheme=self.scheme,
            target=target,
            headers=headers,
            addresses=(self.client, self.local),
        )
        # The ASGI trailers extension (gRPC needs it): see _Stream.send.
        scope["extensions"]["http.response.trailers"] = {}
        stream = _Stream(self, stream_id, scope, event.stream_ended is not None)
        scope["extensions"][WATCH_EXTENSION] = stream
        self.streams[stream_id] = stream
        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, stream)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        if stream_id is None:
            return
        size = event.flow_controlled_length or 0
        stream = self.streams.get(stream_id)
        if stream is None or stream.gone:
            # Nobody will read it: give the window back at once.
            self.acknowledge(stream_id, size)
            dropped = self.discarding.get(stream_id)
            if dropped is not None:
                dropped += size
                if dropped > DISCARD_BYTES:
                    del self.discarding[stream_id]
                    self._reset(stream_id, NO_ERROR)
                else:
                    self.discarding[stream_id] = dropped
            return
        stream.chunks.append((bytes(event.data or b""), size))
        if stream.recv_waiter is not None:
            stream.recv_waiter.set()

    def _trailers(self, event: h2.events.TrailersReceived) -> None:
        """The app never sees request trailers, but malformed ones end their stream."""
        stream_id = event.stream_id
        if stream_id is None or event.headers is None:
            return
        problem = trailers_problem(event.headers)
        if problem is not None:
            log.info("malformed HTTP/2 trailers from %s: %s", self._peer(), problem)
            self._reset(stream_id, PROTOCOL_ERROR)
            self._stream_reset(stream_id)

    def _stream_ended(self, stream_id: int | None) -> None:
        if stream_id is None:
            return
        self.discarding.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.body_ended = True
            if stream.recv_waiter is not None:
                stream.recv_waiter.set()

    def _stream_reset(self, stream_id: int | None) -> None:
        if stream_id is None:
            return
        self.discarding.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.gone = True
            self.acknowledge(stream_id, stream.take_unread())
            stream.wake()

    def _window_opened(self, stream_id: int | None) -> None:
        if not self.window_waiters:
            return
        for stream in list(self.window_waiters):
            if not stream_id or stream.id == stream_id:
                stream.wake()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The app has taken `size` flow-controlled bytes of a stream: the client may send more."""
        if size <= 0 or self.closing or self.broken:
            return
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        self.flush_soon()

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            return
        self.flush_soon()

    # Streams ---------------------------------------------------------------------------------

    async def _run_stream(self, stream: _Stream) -> None:
        scope = stream.scope
        if stream.gone:
            # Reset by the client before the task ran (rapid reset): the app never sees it.
            self._stream_done(stream)
            await trio.lowlevel.checkpoint()
            return
        if stream.body_ended and not stream.gone:
            # The whole body came with the head: raw routes take it without a read (or a
            # timer); `receive` still delivers it, and acknowledges it then.
            scope["extensions"][BODY_EXTENSION] = b"".join(data for data, _ in stream.chunks)
        try:
            try:
                await self.server.app(scope, stream.receive, stream.send)
            except Exception as error:
                log.error(
                    "unhandled error on %s %s", scope["method"], scope["path"], exc_info=error
                )
            if not stream.finished and not stream.gone and not self.broken:
                if stream.sent_head:
                    # A response cut short: reset the stream so the client sees it end.
                    self._reset(stream.id, INTERNAL_ERROR)
                    stream.gone = True
                else:
                    await self._answer_500(stream)
        finally:
            self._stream_done(stream)

    async def _answer_500(self, stream: _Stream) -> None:
        scope = stream.scope
        body = error_json(self.server.families, 500, scope["path"], scope["method"])
        stream.started = False
        stream.trailers = stream.awaiting_trailers = False
        await stream.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await stream.send({"type": "http.response.body", "body": body})

    def _stream_done(self, stream: _Stream) -> None:
        stream_id = stream.id
        self.streams.pop(stream_id, None)
        stream.response_done = True
        unread = stream.take_unread()
        if not stream.gone and not stream.body_ended and not self.broken:
            # The client still sends a body nobody reads: drop it (up to DISCARD_BYTES), so
            # it can finish sending and read the answer.
            self.discarding[stream_id] = unread
        stream.gone = True
        stream.wake()
        self.acknowledge(stream_id, unread)
        if not self.streams:
            self.idle_since = trio.current_time()
            if self.server.draining:
                self._close_now()

    # Closing ---------------------------------------------------------------------------------

    def drain(self) -> None:
        """At shutdown: GOAWAY and close at once if idle, else when the last stream ends.

        Not GOAWAY first and the last responses after it: clients on the h2 library (httpx,
        so the platform SDK) fail every stream still open when a GOAWAY arrives, even the
        ones it lets finish, and the h2 state machine refuses to receive or send after it."""
        if self.closing or self.broken:
            return
        if not self.streams:
            self._close_now()

    def expire(self, now: float) -> None:
        """Called by the server's sweep: close a connection idle too long or whose client has
        stopped reading, and reset the streams that waited too long for window."""
        limits = self.server.limits
        if (
            not self.streams
            and not self.closing
            and now - self.idle_since >= limits.keep_alive_timeout
        ):
            self._close_now()
        since = self._write_since
        if since is not None and now - since >= limits.send_timeout:
            log.info("closing an HTTP/2 connection whose client stopped reading: %s", self._peer())
            abort_socket(self.stream)
        for stream in list(self.window_waiters):
            if now - stream.window_since >= limits.send_timeout:
                self._reset(stream.id, CANCEL)
                stream.gone = True
                stream.wake()

    def _close_now(self) -> None:
        """GOAWAY and stop reading; the writer sends what is queued, then the socket closes."""
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection()
        self.flush_soon()
        self._read_scope.cancel()

    def _lost(self, *, keep_output: bool = False) -> None:
        """The connection cannot carry answers any more: every stream is gone."""
        if not keep_output:
            self.broken = True
            self._out.clear()
            self.queued = 0
        self.closing = True
        self._read_scope.cancel()
        for stream in list(self.streams.values()):
            stream.gone = True
            self.acknowledge(stream.id, stream.take_unread())
            stream.wake()
        if self._wake_writer is not None:
            self._wake_writer.set()
        if self._written is not None:
            self._written.set()
            self._written = None
