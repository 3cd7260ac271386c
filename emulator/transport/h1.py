"""HTTP/1.1 connections served by the emulator itself on trio, calling the ASGI app directly:
requests are read by emulator.transport.h1read, responses written by emulator.transport.h1write.

Owns everything about an HTTP/1.1 connection: reading requests (keep-alive, pipelining, the
request-head limit, a deadline for a head that has begun), the ASGI `http` exchange for each
request (a body read only when the app asks for it, so a slow reader pushes back on the sender;
`http.disconnect` when the client goes away), writing responses (a sized response goes out in one
`send`), and closing: at the keep-alive timeout, after a response the client or the server wants
to be the last, and at shutdown (`H1Server.drain`: idle connections close at once, busy ones
after their response).

A request h1read refuses gets its status (400, 431, 501; 408 when the head was too slow) and the
connection closes after the answer, so a pipelined follow-up is never read (RFC 9112 section
6.1 asks this of a request with both Content-Length and Transfer-Encoding). A body whose
chunked framing breaks mid-way: the app sees `http.disconnect`; if it answered nothing, the
server answers 400.

A write that makes no progress for `ServerLimits.send_timeout` (a client that does not read
its answers) closes the connection (the sweep shuts the socket down; no timer per write).

Over plain TCP a request also gets a `DisconnectWatch` (emulator.web.rawasgi): the server's
`ReadableSockets` (emulator.transport.readiness) reads the socket when it becomes readable
while the app waits, keeping a pipelined next request (up to `max_header_bytes`) and calling
the app back when the client has left, with no task per request.

Over plain TCP a streaming response also gets a `DirectBody` (emulator.web.rawasgi): pieces
written with one `writev` from any code on the loop, no task switch (Fabric's event hub feeds a
thousand streams this way). What the socket does not take is owed, sent first by the next
write, and covered by the send timeout like a write in progress.

Why the emulator has its own: on the job plane every job is three short requests, and Hypercorn
spent more per request than the emulator's own work for it (see benchmarks/README.md for
the figures). A connection that opens with the HTTP/2 preface is handed back to the caller of
`serve_connection` with the bytes read so far (emulator.transport.h2 serves it). A WebSocket
upgrade is served by emulator.transport.websocket; a gRPC request is refused with a 415 (gRPC
needs HTTP/2's trailers).

Generic: knows nothing about Foundry; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import trio

from ..platform.errors import framework_error
from ..web.rawasgi import BODY_EXTENSION, DIRECT_EXTENSION, WATCH_EXTENSION
from .h1read import BadRequest, Phase, RequestHead, RequestReader
from .h1write import CONTINUE, BadResponse, Framing, start_response
from .httpcommon import (
    READ_SIZE,
    ConnectionServer,
    ResponseState,
    abort_socket,
    error_json,
    http_scope,
    peer_addresses,
)
from .readiness import ReadableSockets, available
from .websocket import WebSocketLimits, WebSocketSession, is_upgrade

log = logging.getLogger("emulator.h1")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# How much of an unwanted request body is read and dropped to keep the connection.
DISCARD_BYTES = 4 * 1024 * 1024
DISCARD_SECONDS = 2.0
# How long a refused request's answer may take to write, plus the lingering read after it.
LINGER_SECONDS = 2.0
# What a connection is waiting for (see `_Connection.expire`).
IDLE = "idle"  # the first byte of the next request
HEAD = "head"  # the rest of a request head
BUSY = "busy"  # the app
CLOSING = "closing"
# A write is split into pieces of at most this many bytes, each of which must make progress
# within `send_timeout`.
WRITE_PIECE = 1024 * 1024


def wants_close(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's `Connection` header asks for the connection to end after it."""
    return any(name == b"connection" and b"close" in value.lower() for name, value in headers)


def is_grpc(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request is gRPC (`content-type: application/grpc`, `+proto`, `+json`, ...)."""
    for name, value in headers:
        if name == b"content-type":
            return value.lower().startswith(b"application/grpc")
    return False


class H1Server(ConnectionServer["_Connection"]):
    """The HTTP/1.1 side of every listener."""

    # Bounds for connections upgraded to WebSocket (emulator.transport.websocket).
    websocket_limits = WebSocketLimits()
    # Sockets of requests whose app waits for the client to leave (see `watch_disconnects`).
    readable: ReadableSockets | None = None

    async def watch_disconnects(self) -> None:
        """Run the watch behind each request's `DisconnectWatch`, until cancelled; without it
        (or off Linux) apps wait for a disconnect in a task of their own."""
        if not available():
            return
        self.readable = ReadableSockets()
        try:
            await self.readable.run()
        finally:
            self.readable = None

    async def serve_connection(
        self, stream: trio.abc.Stream, *, scheme: str, sniff_h2: bool = False
    ) -> bytes | None:
        """Serve `stream` until it closes. With `sniff_h2`, a connection that opens with the
        HTTP/2 preface is left open and the bytes read from it are returned (else None)."""
        connection = _Connection(self, stream, scheme)
        self.connections.add(connection)
        try:
            return await connection.run(sniff_h2)
        finally:
            self.connections.discard(connection)


class _Exchange(ResponseState):
    """One request and its response: the ASGI `receive` and `send` callables."""

    __slots__ = (
        "body_done",
        "connection",
        "continued",
        "disconnected",
        "framing",
        "head_only",
        "http10",
        "keep_alive",
        "pending",
        "sent_head",
    )

    def __init__(
        self, connection: _Connection, head_only: bool, http10: bool, keep_alive: bool
    ) -> None:
        super().__init__()
        self.connection = connection
        self.head_only = head_only
        self.http10 = http10
        # Whether the connection may serve another request after this one (the request's
        # wish, then the response's framing).
        self.keep_alive = keep_alive
        self.body_done = False
        self.disconnected = False
        # Body pieces read but not yet given to the app (b"": the end of the body).
        self.pending: list[bytes] = []
        self.sent_head = False
        # Set once `100 Continue` has gone out.
        self.continued = False
        self.framing = Framing(Framing.NONE)

    async def receive(self) -> dict[str, Any]:
        connection = self.connection
        if self.body_done or self.disconnected:
            await connection.wait_for_disconnect(self)
            return {"type": "http.disconnect"}
        pending = self.pending
        if pending:
            piece: bytes | None = pending.pop(0)
        else:
            piece = await connection.next_body()
            if piece is None:
                self.disconnected = True
                return {"type": "http.disconnect"}
        if not piece:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # Tell the app at once when this was the last piece already here (most small bodies).
        if not pending:
            following = connection.buffered_body()
            if following is not None:
                pending.append(following)
        if pending and not pending[0]:
            pending.pop(0)
            self.body_done = True
            return {"type": "http.request", "body": piece, "more_body": False}
        return {"type": "http.request", "body": piece, "more_body": True}

    def prefetch_body(self) -> bytes | None:
        """The whole body if it has already arrived with the head (no read), else None; the
        pieces stay queued for `receive`."""
        connection = self.connection
        first = connection.buffered_body()
        if first is None:
            return None
        self.pending.append(first)
        if not first:
            return b""
        second = connection.buffered_body()
        if second is None:
            return None
        self.pending.append(second)
        return first if not second else None

    async def send(self, message: dict[str, Any]) -> None:
        taken = self.take(message)
        if taken is None:
            return
        body, more = taken
        connection = self.connection
        if connection.broken:
            return
        if not self.sent_head:
            try:
                out = self._head(body, more)
            except BadResponse:
                self.finished = False  # nothing went out: the server answers 500 instead
                raise
            self.sent_head = True
        else:
            out = b""
        framing = self.framing
        failure: BadResponse | None = None
        try:
            if body:
                out += framing.frame(body)
            if not more:
                out += framing.end()
        except BadResponse as error:
            failure = error
        if out:
            if connection.bad_body:
                # The app was told the client left (its body broke) and may be cancelled
                # meanwhile: bytes framed must still go out whole. The send-timeout sweep
                # bounds the wait.
                with trio.CancelScope(shield=True):
                    await connection.write(out)
            else:
                await connection.write(out)
        if failure is not None:
            # The body broke its own framing: what went out cannot be completed, and the
            # connection ends after what could be written.
            connection.broken = True
            raise failure

    # DisconnectWatch (emulator.web.rawasgi), offered over plain TCP ------------------------------

    def watch_disconnect(self, gone: Callable[[], None]) -> bool:
        return self.connection.watch(self, gone)

    def unwatch_disconnect(self) -> None:
        self.connection.unwatch()

    # DirectBody (emulator.web.rawasgi), offered over plain TCP -----------------------------------

    @property
    def owed(self) -> bool:
        return self.connection.owed is not None

    def send_nowait(self, body: bytes) -> bool:
        connection = self.connection
        if not body or self.finished or self.head_only or not self.sent_head:
            return False
        if not connection.can_write_nowait():
            return False
        try:
            pieces = self.framing.pieces(body)
        except BadResponse:
            return False  # the usual `send` raises it to the app
        if pieces:
            connection.write_nowait(pieces)
        return True

    async def flush(self) -> None:
        await self.connection.write(b"")

    def _head(self, body: bytes, more: bool) -> bytes:
        """The response head (raises BadResponse for headers that cannot be written)."""
        server = self.connection.server
        head, self.framing, self.keep_alive = start_response(
            self.status,
            self.headers,
            date=server.date.value(),
            whole=len(body) if self.adds_length(more) else None,
            http10=self.http10,
            keep_alive=self.keep_alive and not server.draining,
            head_only=self.head_only,
        )
        return head


class _Connection:
    """One HTTP/1.1 connection: the request loop and the socket reads and writes."""

    def __init__(self, server: H1Server, stream: trio.abc.Stream, scheme: str) -> None:
        self.server = server
        self.stream = stream
        self.scheme = scheme
        self.reader = RequestReader(server.limits.max_header_bytes)
        self.client, self.local = peer_addresses(stream)
        # Set when bytes may have been lost on the way out: the connection must close.
        self.broken = False
        self.eof = False
        self.phase = IDLE
        self.since = trio.current_time()
        # Set when the head took longer than `head_timeout` (the sweeper stopped the reads).
        self.timed_out = False
        # Bytes received ahead (a pipelined next request) while the current one is answered.
        self.pipelined = 0
        # The exchange being served (None between requests).
        self.current: _Exchange | None = None
        # Set once the connection has become a WebSocket.
        self.websocket: WebSocketSession | None = None
        # The request body's framing was broken (h1read refused it mid-body).
        self.bad_body = False
        # When the write in progress began (None: none in progress).
        self._write_since: float | None = None
        # The socket's descriptor for writes without a task (`write_nowait`): plain TCP only.
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1
        # Whether the server's ReadableSockets watches this socket for the app (`watch`).
        self._watching = False
        # Bytes `write_nowait` took and the socket did not: they go out first on the next write.
        self.owed: memoryview | None = None
        # Writes come from the connection's task and, for `100 Continue`, from whichever task
        # reads the body (Quart reads it in a task of its own): one at a time, in order.
        self._write_lock = trio.StrictFIFOLock()

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.since = trio.current_time()

    def expire(self, now: float) -> None:
        """Called by the server's sweep: end a wait that has lasted too long."""
        limits = self.server.limits
        since = self._write_since
        if since is not None and now - since >= limits.send_timeout:
            log.info("closing a connection whose client stopped reading")
            self.broken = True
            abort_socket(self.stream)
            return
        if self.phase is IDLE:
            if self.server.draining or now - self.since >= limits.keep_alive_timeout:
                self._stop_reading()
        elif self.phase is HEAD and now - self.since >= limits.head_timeout:
            self.timed_out = True
            self._stop_reading()

    def drain(self) -> None:
        """At shutdown: close now if idle (a busy connection closes after its response; a
        WebSocket gets a 1001 close)."""
        if self.websocket is not None:
            self.websocket.going_away()
        elif self.phase is IDLE:
            self._stop_reading()

    def _stop_reading(self) -> None:
        """Make the pending read see the end of the input (the connection then closes on its
        own path); writing stays possible, for a 408. Cheaper than a cancel scope per wait."""
        self.phase = CLOSING
        transport = getattr(self.stream, "transport_stream", self.stream)
        sock = getattr(transport, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)

    # The request loop ----------------------------------------------------------------------------

    async def run(self, sniff_h2: bool) -> bytes | None:
        handed_over = False
        try:
            if sniff_h2:
                preface = await self._sniff_h2()
                if preface is not None:
                    handed_over = True
                    return preface
            reader = self.reader
            while True:
                head = await self._next_request()
                if head is None:
                    return None
                if is_upgrade(head.method, head.headers):
                    await self._upgrade(head)
                    return None
                exchange = await self._exchange(head)
                self.current = None
                if reader.phase is Phase.BODY and not self.broken:
                    await self._discard_body()
                if (
                    self.broken
                    or self.server.draining
                    or not exchange.finished
                    or not exchange.keep_alive
                    or reader.phase is not Phase.HEAD
                ):
                    return None
        finally:
            self.unwatch()
            if not handed_over:
                await trio.aclose_forcefully(self.stream)

    async def _receive(self) -> bytes:
        """The next bytes from the client (b"" once it is gone)."""
        if self.eof:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            data = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
        return bytes(data)

    async def _sniff_h2(self) -> bytes | None:
        """Read until the first bytes decide between HTTP/1.1 and the HTTP/2 preface."""
        if self.server.draining:
            self.eof = True
            return None
        self._enter(IDLE)
        seen = await self._receive()
        if seen:
            self._enter(HEAD)
        while seen and len(seen) < len(H2_PREFACE) and H2_PREFACE.startswith(seen):
            data = await self._receive()
            if not data:
                break
            seen += data
        if seen.startswith(H2_PREFACE):
            return seen
        self.reader.feed(seen)
        if self.eof:
            self.reader.feed(b"")
        return None

    async def _next_request(self) -> RequestHead | None:
        """The next request's head, or None when the connection should close (the client
        left, or its request was refused)."""
        reader = self.reader
        try:
            head = reader.read_head()
            if head is None:
                if not reader.buffer:
                    if reader.eof or self.server.draining:
                        return None
                    # Idle between requests: wait for the first byte of the next one.
                    self._enter(IDLE)
                    data = await self._receive()
                    if not data:
                        return None
                    reader.feed(data)
                    head = reader.read_head()
                self._enter(HEAD)
                while head is None:
                    if reader.eof:
                        return None
                    reader.feed(await self._receive())
                    head = reader.read_head()
        except BadRequest as error:
            status = 408 if self.timed_out else error.status
            await self._refuse(status, bytes(reader.buffer[:1024]))
            return None
        self._enter(BUSY)
        self.pipelined = 0
        return head

    async def _refuse(self, status: int, start: bytes) -> None:
        """Answer a request the server could not read (400, 408, 431, 501) and close; `start`
        is the beginning of its head (its method and path choose the error family)."""
        path = ""
        method = ""
        first_line = start.split(b"\r\n", 1)[0].split(b" ")
        if len(first_line) >= 2:
            method = first_line[0].decode("latin-1")
            path = first_line[1].split(b"?", 1)[0].decode("latin-1")
        if self.current is not None and self.current.sent_head:
            return  # an answer is already under way
        body = error_json(self.server.families, status, path, method)
        headers = [(b"content-type", b"application/json")]
        head, _, _ = start_response(
            status,
            headers,
            date=self.server.date.value(),
            whole=len(body),
            http10=False,
            keep_alive=False,
            head_only=False,
        )
        with trio.move_on_after(LINGER_SECONDS):
            await self.write(head + body)
            await self._linger()

    async def _linger(self) -> None:
        """Before closing on a client that may still be sending, end our side and read what
        keeps coming for a moment: closing with unread input would reset the connection and
        the client might lose the answer before reading it."""
        send_eof = getattr(self.stream, "send_eof", None)
        if send_eof is None or self.broken:
            return
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await send_eof()
        left = DISCARD_BYTES
        while left > 0 and (data := await self._receive()):
            left -= len(data)

    # One exchange --------------------------------------------------------------------------------

    def _scope(self, head: RequestHead) -> dict[str, Any]:
        return http_scope(
            self.server,
            http_version=head.version.decode("ascii"),
            method=head.method.decode("ascii"),
            scheme=self.scheme,
            target=head.target,
            headers=head.headers,
            addresses=(self.client, self.local),
        )

    async def _exchange(self, head: RequestHead) -> _Exchange:
        scope = self._scope(head)
        headers = head.headers
        http10 = head.version == b"1.0"
        exchange = _Exchange(
            self,
            head_only=head.method == b"HEAD",
            http10=http10,
            keep_alive=not http10 and not wants_close(headers),
        )
        self.current = exchange
        if is_grpc(headers):
            await self._refuse_grpc(exchange, scope)
            return exchange
        body = exchange.prefetch_body()
        if body is not None:
            scope["extensions"][BODY_EXTENSION] = body
        if self._fd >= 0:
            scope["extensions"][DIRECT_EXTENSION] = exchange
            scope["extensions"][WATCH_EXTENSION] = exchange
        try:
            await self.server.app(scope, exchange.receive, exchange.send)
        except Exception as error:
            log.error("unhandled error on %s %s", scope["method"], scope["path"], exc_info=error)
        if self.bad_body and not self.broken:
            # The body's framing broke: the connection ends after the answer. If the app gave
            # none, the answer is a 400.
            if not exchange.finished and not exchange.sent_head:
                start = f"{scope['method']} {scope['path']} ".encode("latin-1")
                await self._refuse(400, start)
            else:
                with trio.move_on_after(LINGER_SECONDS):
                    await self._linger()
            self.broken = True
            return exchange
        if exchange.finished:
            return exchange
        if exchange.sent_head or self.broken or exchange.disconnected or self.eof:
            # A response cut short: closing the connection is the only honest ending.
            self.broken = True
            return exchange
        # The app ended without answering.
        error_body = error_json(self.server.families, 500, scope["path"], scope["method"])
        exchange.started = False
        await exchange.send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await exchange.send({"type": "http.response.body", "body": error_body})
        return exchange

    async def _refuse_grpc(self, exchange: _Exchange, scope: dict[str, Any]) -> None:
        """gRPC needs HTTP/2 (its status travels in trailers): a 415 in the path's family.
        The body is then dropped by the request loop, so the connection lives on."""
        path, method = str(scope["path"]), str(scope["method"])
        error = framework_error(self.server.families.for_path(path), 415, path, method)
        error.description = "gRPC needs HTTP/2: use h2c (prior knowledge) or HTTPS with ALPN h2."
        body = json.dumps(error.body()).encode("utf-8")
        headers = [(b"content-type", b"application/json")]
        await exchange.send({"type": "http.response.start", "status": 415, "headers": headers})
        await exchange.send({"type": "http.response.body", "body": body})

    async def _upgrade(self, head: RequestHead) -> None:
        """Serve a WebSocket (`Upgrade: websocket`) on this connection until it closes."""
        # The rest of the request (a body is not allowed), then what came after it: the
        # client's first frames, possibly.
        if self.buffered_body() != b"":
            await self._refuse(400, head.method + b" " + head.target)
            return
        trailing = self.reader.take_rest()
        scope = self._scope(head)
        scope["type"] = "websocket"
        scope["scheme"] = "wss" if self.scheme == "https" else "ws"
        del scope["method"]
        scope["extensions"]["websocket.http.response"] = {}
        session = WebSocketSession(self.stream, scope, self.server.websocket_limits)
        self.websocket = session
        if self.server.draining:
            session.going_away()
        await session.run(self.server.app, head.target, head.headers, trailing)

    async def _discard_body(self) -> None:
        """Read and drop the rest of a body the app did not want (e.g. after a 413), so the
        client reads the answer instead of a reset; a body too long or too slow closes."""
        left = DISCARD_BYTES
        with trio.move_on_after(DISCARD_SECONDS):
            while left > 0:
                piece = await self.next_body()
                if not piece:
                    return
                left -= len(piece)
        self.broken = True

    # Reading a body, watching for the client to leave --------------------------------------------

    def buffered_body(self) -> bytes | None:
        """The next piece of the body (b"": its end) if it is already buffered, else None."""
        try:
            return self.reader.read_body()
        except BadRequest:
            return None

    async def next_body(self) -> bytes | None:
        """The next piece of the request body (b"": its end), reading as needed; None if the
        client left or broke the framing (the connection then closes after the response)."""
        reader = self.reader
        current = self.current
        if (
            reader.waiting_for_continue
            and current is not None
            and not current.sent_head
            and not current.continued
        ):
            current.continued = True
            await self.write(CONTINUE)
        try:
            while True:
                piece = reader.read_body()
                if piece is not None:
                    return piece
                reader.feed(await self._receive())
        except BadRequest:
            # The answer can still be written (then the connection closes): see `_exchange`.
            self.bad_body = True
            return None

    async def wait_for_disconnect(self, exchange: _Exchange) -> None:
        """Return once the client has gone away; bytes of a pipelined next request are kept,
        up to the size of one request head (more, while this request is still being answered,
        is abuse: the connection is closed rather than buffering without end)."""
        while not self.eof and not self.broken and not self.bad_body:
            if not self._read_ahead(await self._receive()):
                break
        exchange.disconnected = True

    def _read_ahead(self, data: bytes) -> bool:
        """Bytes that came while a request is answered: kept for the next request, up to
        `max_header_bytes`; False when the client has left (b"") or sent more (the
        connection is then broken)."""
        if not data:
            return False
        self.pipelined += len(data)
        if self.pipelined > self.server.limits.max_header_bytes:
            log.info("closing a connection that sent %d bytes ahead", self.pipelined)
            self.broken = True
            return False
        self.reader.feed(data)
        return True

    def watch(self, exchange: _Exchange, gone: Callable[[], None]) -> bool:
        """`DisconnectWatch` for the exchange: what `wait_for_disconnect` does, from the
        server's `ReadableSockets` instead of a task. False when it cannot watch."""
        readable = self.server.readable
        if readable is None or self._fd < 0 or self._watching:
            return False
        if self.eof or self.broken or self.bad_body or exchange.disconnected:
            exchange.disconnected = True
            gone()
            return True
        fd = self._fd

        def on_readable() -> None:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.eof = True
            if self._read_ahead(data):
                return
            exchange.disconnected = True
            self.unwatch()
            gone()

        if not readable.watch(fd, on_readable):
            return False
        self._watching = True
        return True

    def unwatch(self) -> None:
        if self._watching:
            self._watching = False
            readable = self.server.readable
            if readable is not None:
                readable.unwatch(self._fd)

    async def write(self, data: bytes) -> None:
        """Send response bytes; a failed or interrupted write breaks the connection (the client
        would otherwise see a desynchronised stream)."""
        if self.broken:
            return
        lock = self._write_lock
        try:
            # Uncontended (the usual case), take it without a scheduler pass: the write itself
            # is the only checkpoint, as it was before writes needed a lock.
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._write_locked(data)
        finally:
            lock.release()

    def can_write_nowait(self) -> bool:
        if self._fd < 0 or self.owed is not None or self.broken:
            return False
        return not self._write_lock.locked()

    def write_nowait(self, pieces: list[bytes]) -> None:
        """Write `pieces` (a framed piece of a body) without waiting, as far as the socket takes
        them; the rest is `owed` to the next write. Only when `can_write_nowait()`."""
        total = sum(len(piece) for piece in pieces)
        try:
            sent = os.writev(self._fd, pieces)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The client is gone: the reads see it too once the socket is shut down.
            self.broken = True
            abort_socket(self.stream)
            return
        if sent < total:
            self.owed = memoryview(b"".join(pieces))[sent:]
            # The send timeout covers owed bytes as it does a write in progress.
            self._write_since = trio.current_time()

    async def _write_locked(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            owed = self.owed
            if owed is not None:
                self.owed = None
                self._write_since = trio.current_time()
                await self.stream.send_all(owed)
            if not data:
                return
            if len(data) <= WRITE_PIECE:
                self._write_since = trio.current_time()
                await self.stream.send_all(data)
            else:
                view = memoryview(data)
                for start in range(0, len(data), WRITE_PIECE):
                    self._write_since = trio.current_time()
                    await self.stream.send_all(view[start : start + WRITE_PIECE])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.broken = True
            self.eof = True
        except BaseException:
            self.broken = True
            raise
        finally:
            self._write_since = None
