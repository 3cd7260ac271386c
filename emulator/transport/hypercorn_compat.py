"""Runtime patches for five defects of Hypercorn 0.18.0's trio worker.

This module owns every monkeypatch the emulator applies to Hypercorn, which serves HTTP only
with `--http-server hypercorn` (by default the emulator's own servers, emulator.transport.h1 and
emulator.transport.h2, do). `apply()` installs them (idempotent; call it before serving, as
`emulator.transport.server.serve` does in that mode): it replaces
`TCPServer` and the `trio` module seen by `hypercorn.trio.run`, and `H2Protocol` in
`hypercorn.protocol`, so it covers every later `hypercorn.trio.serve` / `worker_serve` call
in the process. Each patch exists because of a defect measured in the pinned stack
(hypercorn 0.18.0, trio 0.35.0, quart-trio 0.12.0) and is reproduced by
`tests/transport/test_hypercorn_compat.py`, which also checks that each defect is still present in
stock Hypercorn. When such a "defect still present" test fails after an upgrade, upstream
fixed it: remove that patch, and this module once all five are gone.

1. Server crash when HTTP/2 clients go away under load. On a Closed event (e.g. a client's
   GOAWAY), `TCPServer._close()` calls `stream.send_eof()`, which holds trio's send-conflict
   detector across a checkpoint without taking `send_lock`. If the h2 send task flushes
   DATA for another stream meanwhile, its `send_all()` raises `trio.BusyResourceError`,
   which `protocol_send` does not catch: it escapes the connection's task group and
   `trio.serve_listeners`' handler nursery, and `serve()` exits. Patch: `protocol_send`
   treats it like the other transport errors (the connection is closing), and any
   exception still escaping a connection is logged and confined to that connection.

2. With QuartTrio, Hypercorn's end-of-request bookkeeping is cancelled. It runs inside the
   app's last `send()`: it queues `http.disconnect`, QuartTrio's receiver task sees it and
   cancels the request nursery, and the next checkpoint (restarting the keep-alive timer,
   flushing the GOAWAY, closing after `Connection: close` or at shutdown) raises Cancelled.
   So idle keep-alive connections are never closed, and graceful shutdown waits the full
   `graceful_timeout` for any idle connection or any request answered after it began.
   Patch: one idle watcher task per connection replaces the per-request timer task; going
   idle or busy only moves its cancel-scope deadline (no checkpoint, nothing to cancel).
   A Closed event, or the end of the input, makes the watcher close the connection (so it
   happens even if the asking task is cancelled, and a connection the client left does not
   wait for its keep-alive deadline). Outgoing bytes are sent shielded, the wait for
   `send_lock` included: they were already taken from the h11/h2 state machine, and
   dropping them desynchronises the connection.

3. Accept starvation. `trio.serve_listeners` takes one connection per `accept()` call and
   each call ends with a scheduler pass, so under load a burst of new connections waits
   seconds to be accepted. Patch: Hypercorn's socket listeners are `BatchingListener`s,
   which after each blocking accept also take, without yielding, every connection already
   in the kernel's accept queue, and hand them out on the next calls.

4. An HTTP/2 response ending while the server shuts down often loses its END_STREAM (about
   half the time, with any ASGI app). `EndBody` only waits until the send task has taken the
   last bytes; the send task ends the stream a step later. If that was the connection's
   last response, `H2Protocol` has sent GOAWAY meanwhile, after which the h2 library
   refuses every frame. Patch: `CompatH2Protocol` ends the stream from the task handling
   `EndBody`, before anything else can happen on the connection.

5. A request with both Content-Length and Transfer-Encoding is framed by Transfer-Encoding and
   handed to the app with its Content-Length (h11 accepts it), so a route forwarding the
   declared length promises bytes that never come (issue 16, defect 6). Patch:
   `CompatH11Protocol._create_stream` answers 400 with `Connection: close` and serves nothing
   more on the connection (RFC 9112, section 6.1).

6. Hypercorn's HTTP/2 protocol hands each read whole to h2, which buffers a frame of up to
   16 MiB before checking its size, and answers floods of cheap frames (PING, SETTINGS,
   PRIORITY, RST_STREAM, empty DATA, WINDOW_UPDATE) without limit, so one connection
   starves the others (issue 16, defects 3, 5, 7 and 12). Patch: `CompatH2Protocol.handle`
   passes every read through the emulator's own `emulator.transport.h2.FrameMeter` (the same
   bounds as the emulator's HTTP/2 server: GOAWAY with FRAME_SIZE_ERROR or ENHANCE_YOUR_CALM,
   then the connection closes) and hands h2 the frames a batch at a time with a checkpoint
   between batches.

7. A request head that has begun but never ends (slowloris) is held until the keep-alive
   timeout (75 s) and then dropped without an answer. Patch: when a read leaves a partial head
   on an idle HTTP/1.1 connection, the idle watcher's deadline becomes `HEAD_TIMEOUT` from that
   first byte (`config.emulator_head_timeout` when set), and at that deadline the client gets
   Hypercorn's 408 before the connection closes, as on the emulator's own server.

8. `100 Continue` goes out as soon as the request head is read, before the app has run, so a
   route that refuses a request without its body (a 401 on the execute route) made the client
   send the body anyway (issue 16, defect 11). Patch: `CompatH11Protocol` holds the `100`
   back until the app first asks for the body; `wait_for_body_request` wraps the app so that
   its first `receive()` releases it, finding the protocol through a context variable set
   while the app's task is spawned (trio copies the context into the new task). Quart routes
   read the body as they start, so they still answer `100` at once, as on the own server.

Besides the eight fixes, some tuning. Hypercorn reads at most 64 KiB per `receive_some`
(`hypercorn.trio.tcp_server.MAX_RECV`), which caps a large upload (a streamed result) at one
64 KiB piece per scheduler pass: `CompatTCPServer._read_data` reads `READ_SIZE` instead (and
opens no timeout scope per read when there is no read timeout). The buffer exists only
during one `recv` call and is shrunk to the bytes received, so an idle connection holds none of
it: memory grows with the bytes actually in flight, not with the number of connections.

Two more changes cut the work per response on HTTP/1.1, without changing a byte on the wire:
`CompatH11Protocol` sends the head of a response that declares a Content-Length together with
its first body bytes (or its end), instead of as a write of its own, and
`CompatTCPServer.protocol_send` skips the empty write h11 produces at the end of such a body.
So a small response is one `send()` instead of three. A response without a Content-Length
(a stream) still sends its head at once.

If the installed Hypercorn is not the version these were measured on, `apply()` logs a
warning and still applies them (run the tests to see which are still needed); if the
internals they hook have changed shape, it raises RuntimeError, so the server fails at
start rather than on some connection.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import socket
import types
from collections import deque
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from math import inf
from typing import Any

import h2.exceptions
import h2.frame_buffer
import h11
import hypercorn.protocol
import hypercorn.trio.run as hypercorn_run
import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol.events import Body, EndBody, EndData, Response
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import TrioSingleTask
from hypercorn.typing import TaskGroup

from .h2meter import HEADER_FRAME_COST, Abuse, FrameMeter

__all__ = [
    "MEASURED_VERSION",
    "BatchingListener",
    "CompatH2Protocol",
    "CompatH11Protocol",
    "CompatTCPServer",
    "apply",
    "wait_for_body_request",
]

MEASURED_VERSION = "0.18.0"
# Largest read per receive_some on a connection (Hypercorn's own is 64 KiB); see module doc.
READ_SIZE = 1024 * 1024
# How long a request head may take once its first byte has arrived (patch 7), unless the
# config names its own (`emulator_head_timeout`, the emulator's `body_timeout`).
HEAD_TIMEOUT = 30.0

log = logging.getLogger(__name__)

# Set while an HTTP/1.1 request's app task is spawned (patch 8): sends the `100 Continue` held
# back for that request, if the client is still waiting for it.
_RELEASE_CONTINUE: contextvars.ContextVar[Callable[[], Awaitable[None]]] = contextvars.ContextVar(
    "emulator_release_continue"
)

# What the patches override or call, besides plain attributes.
_HOOKED_METHODS = {
    TCPServer: ("run", "protocol_send", "_read_data", "_close", "_initiate_server_close"),
    H2Protocol: ("stream_send", "_flush", "handle"),
    H11Protocol: ("stream_send", "_send_h11_event", "_create_stream", "_send_error_response"),
}


class _IdleWatcher(TrioSingleTask):
    """Stands in for `TCPServer.idle_task`: closes the connection once idle for too long.

    Hypercorn calls `restart()` when the connection turns idle and `stop()` when a request
    starts. Both only move the deadline of the watcher's cancel scope and never checkpoint,
    so a caller that is being cancelled (QuartTrio's request task) still gets them done.
    """

    def __init__(self, server: CompatTCPServer) -> None:
        super().__init__()
        self._server = server
        self._scope = trio.CancelScope()
        self._spawned = False
        self._idle = False
        # A request head has begun and not ended: at the deadline, answer 408 (patch 7).
        self._head = False

    async def restart(self, task_group: TaskGroup, action: Callable[..., Any]) -> None:
        # `action` is Hypercorn's own timer body, which the watcher replaces.
        if not self._spawned:
            self._spawned = True
            task_group.spawn(self._watch)
        self._idle = True
        if self._server.context.terminated.is_set():
            self._scope.cancel()
        else:
            self._scope.deadline = trio.current_time() + self._server.config.keep_alive_timeout

    async def stop(self) -> None:
        self._idle = False
        self._head = False
        self._scope.deadline = inf

    def head_begun(self) -> None:
        """A read left part of a request head: it must end within the head timeout."""
        if self._head:
            return
        self._head = True
        timeout = float(getattr(self._server.config, "emulator_head_timeout", HEAD_TIMEOUT))
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + timeout)

    def close_soon(self) -> None:
        """Close the connection from the watcher task (which nobody else cancels)."""
        self._scope.cancel()

    async def _watch(self) -> None:
        with self._scope:
            await self._server.context.terminated.wait()
            # Shutting down: close now if idle, else when it turns idle (see restart).
            if self._idle:
                self._scope.cancel()
            await trio.sleep_forever()
        # Reached only through our own scope: a cancelled connection propagates instead.
        with trio.CancelScope(shield=True):
            inner = getattr(self._server.protocol, "protocol", None)
            if self._head and isinstance(inner, H11Protocol):
                with contextlib.suppress(Exception):
                    await inner._send_error_response(408)
            await self._server._initiate_server_close()


class CompatTCPServer(TCPServer):
    """Hypercorn's per-connection handler with defects 1 and 2 fixed (see module doc)."""

    idle_task: _IdleWatcher

    async def run(self) -> None:
        self.idle_task = _IdleWatcher(self)
        try:
            await super().run()
        except* Exception:
            # A bug in one connection must not end serve() for all of them.
            await self.config.log.exception("Connection failed; dropped it")

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            if not event.data:
                # h11's end of a body with a Content-Length: nothing to write.
                return
            try:
                with trio.CancelScope(shield=True):
                    async with self.send_lock:
                        await self.stream.send_all(event.data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                # Busy: a concurrent close holds the stream, the connection is going away.
                await self.protocol.handle(Closed())
            return
        if isinstance(event, Closed):
            self.idle_task.close_soon()
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        # Hypercorn's loop, reading READ_SIZE at a time, and without a `fail_after` scope per
        # read when there is no read timeout (the emulator's case).
        timeout = self.config.read_timeout
        while True:
            try:
                if timeout:
                    with trio.fail_after(timeout):
                        data = await self.stream.receive_some(READ_SIZE)
                else:
                    data = await self.stream.receive_some(READ_SIZE)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if not data:
                break
            self._watch_head()
        await self.protocol.handle(Closed())
        # The client left (or the read timed out): release the connection now, not at the
        # end of the keep-alive period.
        self.idle_task.close_soon()

    def _watch_head(self) -> None:
        """After a read: if an idle HTTP/1.1 connection now holds part of a head, time it."""
        inner = getattr(self.protocol, "protocol", None)
        if not isinstance(inner, H11Protocol):
            return
        connection = inner.connection
        if connection.their_state is h11.IDLE and connection.trailing_data[0]:
            self.idle_task.head_begun()


def lift_continuation_count(header_limit: int) -> None:
    """Let h2 take as many CONTINUATION frames as the byte bound of `FrameMeter` allows (h2
    refuses a block of more than 64 frames). Process-wide, and only ever raised: the meter
    bounds header blocks before h2 sees them."""
    frames = header_limit // HEADER_FRAME_COST + 1
    if frames > h2.frame_buffer.CONTINUATION_BACKLOG:
        h2.frame_buffer.CONTINUATION_BACKLOG = frames


class CompatH2Protocol(H2Protocol):
    """Hypercorn's HTTP/2 protocol with defects 4 and 6 fixed (see module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = 2 * int(self.config.h2_max_header_list_size)
        self._meter = FrameMeter(header_limit=limit)
        lift_continuation_count(limit)

    async def handle(self, event: Event) -> None:
        if not isinstance(event, RawData) or self.closed:
            await super().handle(event)
            return
        data = event.data
        try:
            cuts = self._meter.scan(data, trio.current_time())
        except Abuse as abuse:
            log.info("HTTP/2 connection ended: %s", abuse)
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.connection.close_connection(error_code=abuse.code)
            await self._flush()
            await self.send(Closed())
            return
        if not cuts:
            await super().handle(event)
            return
        start = 0
        for cut in (*cuts, len(data)):
            await super().handle(RawData(data=data[start:cut]))
            start = cut
            if self.closed:
                return
            # Other connections run between batches of frames.
            await trio.lowlevel.checkpoint()

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, Body):
            # WINDOW_UPDATEs the client may send for these bytes (two per DATA frame).
            self._meter.credit += 2 * (len(event.data) // 16384 + 1)
        await super().stream_send(event)
        # super() returned once the send task took the last bytes: end the stream now,
        # unless the send task already did or the stream or connection is gone.
        if isinstance(event, (EndBody, EndData)) and event.stream_id in self.stream_buffers:
            try:
                self.connection.end_stream(event.stream_id)
            except h2.exceptions.ProtocolError:
                return
            await self._flush()


class CompatH11Protocol(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, sending a sized response's head with its body (module doc).

    Wraps the `send` callable it was given: the bytes of a head held back are prepended to the
    next bytes written, or written on their own before any other event, and at the latest when
    the stream event that follows the head has been handled.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send_out = self.send
        self._hold_next = False
        self._held: bytes | None = None
        self.send = self._coalescing_send
        # Whether the current request's app has asked for its body (patch 8).
        self._body_requested = False

    async def _create_stream(self, request: Any) -> None:
        names = [name.lower() for name, _ in request.headers]
        if b"transfer-encoding" in names and b"content-length" in names:
            # Ambiguous framing (RFC 9112, section 6.1): refuse, and read nothing more.
            await self._send_error_response(400)
            await self.send(Closed())
            return
        self._body_requested = False
        token = _RELEASE_CONTINUE.set(self._release_continue)
        try:
            await super()._create_stream(request)
        finally:
            _RELEASE_CONTINUE.reset(token)

    async def _send_h11_event(self, event: Any) -> None:
        if (
            isinstance(event, h11.InformationalResponse)
            and event.status_code == 100
            and not self._body_requested
        ):
            return  # held back until the app asks for the body (patch 8)
        await super()._send_h11_event(event)

    async def _release_continue(self) -> None:
        if self._body_requested:
            return
        self._body_requested = True
        if self.connection.they_are_waiting_for_100_continue:
            await self._send_h11_event(
                h11.InformationalResponse(
                    status_code=100, headers=self.config.response_headers("h11")
                )
            )

    async def _coalescing_send(self, event: Event) -> None:
        if isinstance(event, RawData):
            if self._hold_next:
                self._hold_next = False
                self._held = event.data
                return
            if self._held is not None:
                event = RawData(data=self._held + event.data)
                self._held = None
        elif self._held is not None:
            await self._flush_held()
        await self._send_out(event)

    async def _flush_held(self) -> None:
        held, self._held = self._held, None
        if held:
            await self._send_out(RawData(data=held))

    async def stream_send(self, event: StreamEvent) -> None:
        if (
            isinstance(event, Response)
            and event.status_code >= 200
            and any(name.lower() == b"content-length" for name, _ in event.headers)
        ):
            self._hold_next = True
            try:
                await super().stream_send(event)
            finally:
                self._hold_next = False
            return
        await super().stream_send(event)
        if self._held is not None:
            await self._flush_held()


def wait_for_body_request(app: Any) -> Any:
    """The ASGI `app`, whose first `receive()` of an HTTP request releases the `100 Continue`
    that `CompatH11Protocol` holds back (patch 8)."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        release = _RELEASE_CONTINUE.get(None)
        if release is None or scope["type"] != "http":
            await app(scope, receive, send)
            return
        asked = False

        async def receive_after_continue() -> Any:
            nonlocal asked
            if not asked:
                asked = True
                await release()
            return await receive()

        await app(scope, receive_after_continue, send)

    return asgi


class BatchingListener(trio.abc.Listener[trio.SocketStream]):
    """A `trio.SocketListener` wrapper whose `accept()` drains the kernel's accept queue.

    The first `accept()` blocks as usual; the connections already waiting behind it are
    accepted at once (at most `max_batch` in all) and returned by the next calls without a
    scheduler pass. Errors other than "queue empty" while draining are left for the next
    blocking accept to raise, so `trio.serve_listeners` handles them as before.
    """

    def __init__(self, listener: trio.SocketListener, max_batch: int = 256) -> None:
        self.listener = listener
        self.max_batch = max_batch
        # A second descriptor of the listening socket, for plain non-blocking accept() calls.
        self._socket = socket.socket(fileno=os.dup(listener.socket.fileno()))
        self._socket.setblocking(False)
        self._ready: deque[trio.SocketStream] = deque()

    async def accept(self) -> trio.SocketStream:
        if self._ready:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            self._ready.append(await self.listener.accept())
            while len(self._ready) < self.max_batch:
                try:
                    connection, _ = self._socket.accept()
                except OSError:
                    break
                self._ready.append(trio.SocketStream(trio.socket.from_stdlib_socket(connection)))
        return self._ready.popleft()

    async def aclose(self) -> None:
        while self._ready:
            self._ready.popleft().socket.close()
        self._socket.close()
        await self.listener.aclose()


def _batching_socket_listener(sock: trio.socket.SocketType) -> BatchingListener:
    return BatchingListener(trio.SocketListener(sock))


class _TrioSeenByHypercorn(types.ModuleType):
    """`trio` as hypercorn.trio.run sees it: trio itself, except for `SocketListener`."""

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


def apply() -> None:
    """Install the patches into Hypercorn's trio worker (idempotent).

    Affects servers started afterwards through `hypercorn.trio.serve` or
    `hypercorn.trio.run.worker_serve` in this process.
    """
    run_globals = vars(hypercorn_run)  # worker_serve looks both names up here at call time
    protocol_globals = vars(hypercorn.protocol)  # so does ProtocolWrapper for H2Protocol
    if isinstance(run_globals.get("trio"), _TrioSeenByHypercorn):
        return
    installed = version("hypercorn")
    if installed != MEASURED_VERSION:
        log.warning(
            "hypercorn %s is installed; emulator.transport.hypercorn_compat was measured on %s: "
            "run tests/transport/test_hypercorn_compat.py and drop the patches upstream has fixed",
            installed,
            MEASURED_VERSION,
        )
    if (
        run_globals.get("TCPServer") is not TCPServer
        or protocol_globals.get("H2Protocol") is not H2Protocol
        or protocol_globals.get("H11Protocol") not in (H11Protocol, CompatH11Protocol)
        or not all(hasattr(cls, name) for cls, names in _HOOKED_METHODS.items() for name in names)
    ):
        raise RuntimeError(
            f"hypercorn {installed}: hypercorn.trio.run.TCPServer or hypercorn.protocol."
            "H2Protocol is not what this module patches; update or remove it"
        )
    seen = _TrioSeenByHypercorn("trio")
    seen.SocketListener = _batching_socket_listener  # type: ignore[attr-defined]
    protocol_globals["H2Protocol"] = CompatH2Protocol
    protocol_globals["H11Protocol"] = CompatH11Protocol
    run_globals["TCPServer"] = CompatTCPServer
    run_globals["trio"] = seen
