"""HTTP/2 connections served by the emulator itself: its own protocol codec (h2codec) on trio,
calling the ASGI app directly.

Owns everything about an HTTP/2 connection (h2c with prior knowledge, whose preface the
HTTP/1.1 side sniffed, or ALPN "h2" over TLS): one reader feeding the codec, one
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

Defences against a hostile client, each a bound (the figures are the constants below and in
h2meter):

- Request bodies: the client may send at most `STREAM_WINDOW` (1 MiB) per stream and
  `CONNECTION_WINDOW` (4 MiB) per connection ahead of what the app has read; window is given
  back only as the app takes the bytes.
- Frames: `FrameMeter` (h2meter) walks the 9-byte frame headers of every read before the
  codec sees them. A frame longer than `MAX_FRAME_SIZE` ends the connection with
  FRAME_SIZE_ERROR at its header, a header block (HEADERS plus CONTINUATION) longer than twice
  `max_header_bytes` ends it too, and the bytes of one read are handed to the codec
  `BATCH_FRAMES` frames at a time with a checkpoint between batches, so one connection
  flooding frames cannot keep the others waiting.
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
  REFUSED_STREAM for each extra one, and the connection lives on.

Generic: knows nothing about Foundry; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ..web.rawasgi import BODY_EXTENSION, WATCH_EXTENSION
from .h2codec import (
    ConnectionEnded,
    DataReceived,
    ProtocolFailure,
    RequestReceived,
    ServerConnection,
    StreamGone,
    StreamReset,
    TrailersReceived,
    WindowOpened,
)
from .h2fields import CONNECTION_FIELDS, request_problem, trailers_problem
from .h2meter import Abuse, FrameMeter
from .h2wire import ErrorCode
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
# An app's send waits for the writer once this much is queued and not yet written.
HIGH_WATER = 512 * 1024
# The connection reads no more while this much waits to be written (write-side backpressure).
OUTBOUND_LIMIT = 1024 * 1024
# How much of a request body nobody reads any more (the response is complete) is dropped
# before the stream is reset.
DISCARD_BYTES = 4 * 1024 * 1024
STATUS = {status: str(status).encode("ascii") for status in range(100, 600)}
NO_ERROR = ErrorCode.NO_ERROR
INTERNAL_ERROR = ErrorCode.INTERNAL_ERROR
PROTOCOL_ERROR = ErrorCode.PROTOCOL_ERROR
REFUSED_STREAM = ErrorCode.REFUSED_STREAM
CANCEL = ErrorCode.CANCEL


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
        codec = connection.codec
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
                codec.send_headers(self.id, headers, end_stream=end)
                if end:
                    self.ended_local = True
                    connection.flush_soon()
                    self._done_if(True)
                    return
            if body:
                await self._send_body(body, ends)
            elif ends:
                codec.end_stream(self.id)
                self.ended_local = True
        except StreamGone:
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
                connection.codec.send_headers(self.id, fields, end_stream=True)
                self.ended_local = True
            except StreamGone:
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
        codec = connection.codec
        position = 0
        total = len(body)
        while position < total:
            if self.gone:
                return
            window = codec.window(self.id)
            if window <= 0:
                connection.flush_soon()
                await self._wait_window()
                continue
            size = min(window, codec.max_frame_size, total - position)
            piece = body if size == total else body[position : position + size]
            position += size
            last = end and position == total
            codec.send_data(self.id, piece, end_stream=last)
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
        # Beyond this a header block ends the connection (ENHANCE_YOUR_CALM); below it, the
        # app answers 431 for a head larger than max_header_bytes.
        header_list_limit = 2 * server.limits.max_header_bytes
        self.codec = ServerConnection(
            stream_window=STREAM_WINDOW,
            connection_window=CONNECTION_WINDOW,
            max_streams=MAX_CONCURRENT_STREAMS,
            # The server refuses streams past MAX_CONCURRENT_STREAMS running apps itself; the
            # codec's bound also counts streams whose client still sends a body nobody reads.
            stream_limit=2 * MAX_CONCURRENT_STREAMS,
            header_list_limit=header_list_limit,
        )
        self.meter = FrameMeter(header_limit=header_list_limit)
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
        """Queue whatever the codec has to send; the writer sends everything queued in this
        scheduler pass in one write."""
        data = self.codec.data_to_send()
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
                self.codec.start()
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
            self.codec.close(abuse.code)
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
        """Hand bytes to the codec and act on its events; False when the connection must end."""
        try:
            events = self.codec.receive(data)
        except ProtocolFailure as failure:
            # The codec has queued a GOAWAY with the failure's code.
            log.info("HTTP/2 protocol error from %s: %s", self._peer(), failure)
            self.flush_soon()
            return False
        keep = True
        # Streams the client reset in this same batch never start (rapid reset costs little).
        reset = {event.stream_id for event in events if isinstance(event, StreamReset)}
        for event in events:
            if isinstance(event, RequestReceived):
                if not reset or event.stream_id not in reset:
                    self._start_stream(event)
            elif isinstance(event, DataReceived):
                self._data(event)
            elif isinstance(event, TrailersReceived):
                self._trailers(event)
            elif isinstance(event, StreamReset):
                self._stream_reset(event.stream_id)
            elif isinstance(event, WindowOpened):
                self._window_opened(event.stream_id)
            elif isinstance(event, ConnectionEnded):
                keep = False
        self.flush_soon()
        return keep

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    def _start_stream(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
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
        stream = _Stream(self, stream_id, scope, event.ended)
        scope["extensions"][WATCH_EXTENSION] = stream
        self.streams[stream_id] = stream
        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, stream)

    def _data(self, event: DataReceived) -> None:
        stream_id = event.stream_id
        size = event.flow_length
        stream = self.streams.get(stream_id)
        if stream is None or stream.gone:
            # Nobody will read it: give the window back at once.
            self.acknowledge(stream_id, size)
            if event.ended:
                self.discarding.pop(stream_id, None)
                return
            dropped = self.discarding.get(stream_id)
            if dropped is not None:
                dropped += size
                if dropped > DISCARD_BYTES:
                    del self.discarding[stream_id]
                    self._reset(stream_id, NO_ERROR)
                else:
                    self.discarding[stream_id] = dropped
            return
        if size:
            stream.chunks.append((event.data, size))
        if event.ended:
            stream.body_ended = True
        if stream.recv_waiter is not None:
            stream.recv_waiter.set()

    def _trailers(self, event: TrailersReceived) -> None:
        """The app never sees request trailers (they end the body), but malformed ones end
        their stream."""
        stream_id = event.stream_id
        problem = trailers_problem(event.headers)
        if problem is not None:
            log.info("malformed HTTP/2 trailers from %s: %s", self._peer(), problem)
            self._reset(stream_id, PROTOCOL_ERROR)
            self._stream_reset(stream_id)
            return
        self.discarding.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.body_ended = True
            if stream.recv_waiter is not None:
                stream.recv_waiter.set()

    def _stream_reset(self, stream_id: int) -> None:
        self.discarding.pop(stream_id, None)
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.gone = True
            self.acknowledge(stream_id, stream.take_unread())
            stream.wake()

    def _window_opened(self, stream_id: int) -> None:
        if not self.window_waiters:
            return
        for stream in list(self.window_waiters):
            if not stream_id or stream.id == stream_id:
                stream.wake()

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The app has taken `size` flow-controlled bytes of a stream: the client may send more."""
        if size <= 0 or self.closing or self.broken:
            return
        self.codec.acknowledge(stream_id, size)
        self.flush_soon()

    def _reset(self, stream_id: int, code: ErrorCode) -> None:
        self.codec.reset_stream(stream_id, code)
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
        ones it lets finish."""
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
        self.codec.close()
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
