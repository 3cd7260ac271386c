"""Regression tests for emulator/hypercorn_compat.py, against real sockets on 127.0.0.1.

Each defect has two kinds of test:
- `test_stock_*` checks that the defect is still present in the installed stack. The
  `stock_hypercorn` fixture puts back the three module globals that `apply()` replaces
  (TCPServer and trio in hypercorn.trio.run, H2Protocol in hypercorn.protocol), so these
  run Hypercorn exactly as installed, whatever other tests applied before. When one of them
  fails, upstream has fixed the defect: remove that patch (the failure message says which).
- `test_patched_*` runs the same reproduction after `apply()` and checks the fix.
No test sleeps: they wait for events, bounded by `trio.fail_after` / `trio.move_on_after`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import h11
import hypercorn.protocol
import hypercorn.trio
import hypercorn.trio.run as hypercorn_run
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from quart_trio import QuartTrio

from emulator.transport import hypercorn_compat
from emulator.transport.hypercorn_compat import BatchingListener, CompatH2Protocol, CompatTCPServer

_RUN_GLOBALS = vars(hypercorn_run)
_PROTOCOL_GLOBALS = vars(hypercorn.protocol)
_STOCK: list[tuple[dict[str, Any], str, object]] = [
    (_RUN_GLOBALS, "TCPServer", TCPServer),
    (_RUN_GLOBALS, "trio", trio),
    (_PROTOCOL_GLOBALS, "H2Protocol", H2Protocol),
    (_PROTOCOL_GLOBALS, "H11Protocol", H11Protocol),
]

KEEP_ALIVE = 0.2  # seconds; the keep-alive tests wait at most 5x this for the close


def _upstream_fixed(defect: str, remove: str) -> str:
    return (
        f"The installed stack no longer shows defect {defect}. If this reproduces, upstream "
        f"fixed it: remove {remove} from emulator/hypercorn_compat.py, and this test."
    )


@pytest.fixture
def stock_hypercorn() -> Any:
    saved = [(namespace, name, namespace[name]) for namespace, name, _ in _STOCK]
    for namespace, name, value in _STOCK:
        namespace[name] = value
    yield
    for namespace, name, value in saved:
        namespace[name] = value


@pytest.fixture
def patched_hypercorn(stock_hypercorn: None) -> None:
    hypercorn_compat.apply()


# --- servers and apps --------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.port = 0
        self.stop = trio.Event()  # the shutdown trigger
        self.stopped = trio.Event()  # serve() returned or raised
        self.error: BaseException | None = None


@asynccontextmanager
async def _serving(app: Any, config: Config) -> AsyncIterator[_Server]:
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    server = _Server()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await hypercorn.trio.serve(
                app, config, shutdown_trigger=server.stop.wait, task_status=task_status
            )
        except* Exception as error:
            server.error = error
        finally:
            server.stopped.set()

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(run)
        server.port = int(binds[0].rsplit(":", 1)[1])
        yield server
        nursery.cancel_scope.cancel()


def _config(*, keep_alive: float = 60, graceful: float = 30) -> Config:
    config = Config()
    config.keep_alive_timeout = keep_alive
    config.graceful_timeout = graceful
    return config


CHUNK = b"x" * 2**14


async def _streaming_app(scope: Any, receive: Any, send: Any) -> None:
    """Raw ASGI: /stream answers 3 MiB in 16 KiB chunks, anything else a short 'ok'."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/stream":
        for _ in range(192):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": b"ok"})


class _QuartApp:
    """A QuartTrio app: / answers at once, /slow once `release` is set."""

    def __init__(self) -> None:
        self.app = QuartTrio(__name__)
        self.arrived = trio.Event()
        self.release = trio.Event()

        @self.app.route("/")
        async def index() -> str:
            return "ok"

        @self.app.route("/slow")
        async def slow() -> str:
            self.arrived.set()
            await self.release.wait()
            return "late"


# --- a raw client: HTTP/1.1 or h2c with prior knowledge -----------------------------------


class _Client:
    def __init__(self, stream: trio.SocketStream, protocol: str) -> None:
        self.stream = stream
        self.protocol = protocol
        self.h11 = h11.Connection(h11.CLIENT)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.stream_id = 0

    @classmethod
    async def connect(cls, port: int, protocol: str) -> _Client:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port), protocol)
        if protocol == "h2":
            client.h2.initiate_connection()
            await client.stream.send_all(client.h2.data_to_send())
        return client

    async def send_request(self, path: str) -> None:
        if self.protocol == "h11":
            request = h11.Request(method="GET", target=path, headers=[("Host", "test")])
            await self.stream.send_all(self.h11.send(request) + self.h11.send(h11.EndOfMessage()))
        else:
            self.stream_id = self.h2.get_next_available_stream_id()
            headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
            self.h2.send_headers(self.stream_id, [*headers, (":authority", "test")], True)
            await self.stream.send_all(self.h2.data_to_send())

    async def read_response(self) -> tuple[int, bytes]:
        status, body = 0, b""
        if self.protocol == "h11":
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self.h11.start_next_cycle()
                    return status, body
                elif isinstance(event, h11.ConnectionClosed):
                    raise AssertionError("connection closed before the response ended")
        while True:
            data = await self.stream.receive_some()
            if not data:
                raise AssertionError("connection closed before the response ended")
            events = self.h2.receive_data(data)
            for h2_event in events:
                if getattr(h2_event, "stream_id", None) != self.stream_id:
                    continue
                if isinstance(h2_event, h2.events.ResponseReceived):
                    status = int(dict(h2_event.headers or [])[b":status"])
                elif isinstance(h2_event, h2.events.DataReceived):
                    body += h2_event.data or b""
                    self.h2.acknowledge_received_data(
                        h2_event.flow_controlled_length or 0, self.stream_id
                    )
            await self.stream.send_all(self.h2.data_to_send())
            if any(isinstance(e, h2.events.StreamEnded) for e in events):
                return status, body

    async def get(self, path: str = "/") -> tuple[int, bytes]:
        await self.send_request(path)
        return await self.read_response()

    async def wait_closed(self) -> None:
        """Return when the server has closed the connection (EOF or reset)."""
        try:
            while await self.stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass

    async def aclose(self) -> None:
        await self.stream.aclose()


# --- defect 1: HTTP/2 client disconnects under load end serve() --------------------------


async def _abort_mid_response(port: int, streams: int) -> None:
    """Ask for many large responses, read a little, then send GOAWAY and drop the socket."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return  # the server is already gone
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    conn.increment_flow_control_window(2**30)
    for _ in range(streams):
        stream_id = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", "/stream"), (":scheme", "http")]
        conn.send_headers(stream_id, [*headers, (":authority", "test")], end_stream=True)
    try:
        await stream.send_all(conn.data_to_send())
        received = 0
        while received < 2**18:
            data = await stream.receive_some()
            if not data:
                break
            received += len(data)
        conn.close_connection()
        await stream.send_all(conn.data_to_send())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        stream.socket.close()  # unread data pending: the kernel resets the connection


async def _abort_storm(server: _Server, done: Callable[[], bool], rounds: int = 10) -> int:
    """Rounds of 32 connections x 16 streams aborted mid-response, until `done()`."""
    done_rounds = 0
    while done_rounds < rounds and not (done() or server.stopped.is_set()):
        async with trio.open_nursery() as nursery:
            for _ in range(32):
                nursery.start_soon(_abort_mid_response, server.port, 16)
        done_rounds += 1
    return done_rounds


@pytest.fixture
def busy_errors(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the BusyResourceErrors raised by SocketStream.send_all (the race of defect 1)."""
    count = [0]
    send_all = trio.SocketStream.send_all

    async def counting_send_all(self: trio.SocketStream, data: Any) -> None:
        try:
            await send_all(self, data)
        except trio.BusyResourceError:
            count[0] += 1
            raise

    monkeypatch.setattr(trio.SocketStream, "send_all", counting_send_all)
    return count


async def test_stock_defect1_h2_abort_storm_ends_serve(stock_hypercorn: None) -> None:
    with trio.fail_after(30):
        async with _serving(_streaming_app, _config()) as server:
            rounds = await _abort_storm(server, done=server.stopped.is_set)
            if server.error is None:
                pytest.fail(
                    f"serve() survived {rounds} rounds of aborted h2 connections. "
                    + _upstream_fixed("1", "the BusyResourceError handling and CompatTCPServer.run")
                )
            assert isinstance(server.error, BaseExceptionGroup)
            assert server.error.subgroup(trio.BusyResourceError) is not None, server.error


async def test_patched_h2_abort_storm_server_survives(
    patched_hypercorn: None, busy_errors: list[int]
) -> None:
    with trio.fail_after(30):
        async with _serving(_streaming_app, _config()) as server:
            await _abort_storm(server, done=lambda: busy_errors[0] > 0)
            assert not server.stopped.is_set(), f"serve() ended: {server.error!r}"
            assert busy_errors[0] > 0, "the race was not reproduced: the test proved nothing"
            client = await _Client.connect(server.port, "h2")
            assert await client.get("/") == (200, b"ok")
            await client.aclose()


class _BusyStream:
    """What protocol_send meets while TCPServer._close() is inside stream.send_eof()."""

    async def send_all(self, data: bytes) -> None:
        raise trio.BusyResourceError("another task is currently sending data on this SocketStream")


class _RecordingProtocol:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def handle(self, event: Any) -> None:
        self.events.append(event)


async def test_patched_send_on_busy_stream_means_closed(patched_hypercorn: None) -> None:
    server = CompatTCPServer(None, Config(), WorkerContext(None), {}, _BusyStream())  # type: ignore[arg-type]
    server.protocol = _RecordingProtocol()  # type: ignore[assignment]
    with trio.fail_after(5):
        await server.protocol_send(RawData(data=b"frame"))
    assert server.protocol.events == [Closed()]  # type: ignore[attr-defined]


async def test_patched_connection_failure_is_contained(
    patched_hypercorn: None, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(CompatTCPServer):
        async def _read_data(self) -> None:
            raise RuntimeError("connection bug")

    config = Config()
    config.errorlog = logging.getLogger("test.hypercorn_compat")
    ours, theirs = trio.socket.socketpair()
    with trio.fail_after(5):
        await Failing(None, config, WorkerContext(None), {}, trio.SocketStream(ours)).run()  # type: ignore[arg-type]
    theirs.close()
    assert "connection bug" in caplog.text


# --- defect 2: QuartTrio cancels Hypercorn's end-of-request bookkeeping --------------------


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_stock_defect2_idle_keepalive_connection_stays_open(
    stock_hypercorn: None, protocol: str
) -> None:
    with trio.fail_after(15):
        async with _serving(_QuartApp().app, _config(keep_alive=KEEP_ALIVE)) as server:
            client = await _Client.connect(server.port, protocol)
            assert await client.get("/") == (200, b"ok")
            with trio.move_on_after(5 * KEEP_ALIVE):
                await client.wait_closed()
                pytest.fail(
                    f"the idle {protocol} connection was closed. "
                    + _upstream_fixed("2", "_IdleWatcher and CompatTCPServer's defect-2 parts")
                )
            await client.aclose()


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_patched_idle_keepalive_connection_closed_after_timeout(
    patched_hypercorn: None, protocol: str
) -> None:
    with trio.fail_after(15):
        async with _serving(_QuartApp().app, _config(keep_alive=KEEP_ALIVE)) as server:
            client = await _Client.connect(server.port, protocol)
            assert await client.get("/") == (200, b"ok")
            assert await client.get("/") == (200, b"ok")  # the timer is re-armed every time
            idle_since = trio.current_time()
            with trio.move_on_after(5 * KEEP_ALIVE) as waiting:
                await client.wait_closed()
            assert not waiting.cancelled_caught, "idle connection still open after 5x timeout"
            assert trio.current_time() - idle_since >= KEEP_ALIVE / 2
            await client.aclose()


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_patched_connection_released_when_client_leaves(
    patched_hypercorn: None, protocol: str
) -> None:
    with trio.fail_after(15):
        async with _serving(_QuartApp().app, _config(keep_alive=60)) as server:
            await trio.testing.wait_all_tasks_blocked()
            before = len(os.listdir("/proc/self/fd"))
            client = await _Client.connect(server.port, protocol)
            assert await client.get("/") == (200, b"ok")
            await client.aclose()
            await trio.testing.wait_all_tasks_blocked()
            assert len(os.listdir("/proc/self/fd")) == before, "server kept the socket open"


async def _shutdown_duration(server: _Server) -> float:
    started = trio.current_time()
    server.stop.set()
    await server.stopped.wait()
    assert server.error is None, server.error
    return trio.current_time() - started


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_stock_defect2_shutdown_waits_for_idle_connection(
    stock_hypercorn: None, protocol: str
) -> None:
    with trio.fail_after(15):
        async with _serving(_QuartApp().app, _config(graceful=1)) as server:
            client = await _Client.connect(server.port, protocol)
            assert await client.get("/") == (200, b"ok")
            if await _shutdown_duration(server) < 0.8:
                pytest.fail(
                    f"shutdown did not wait for the idle {protocol} connection. "
                    + _upstream_fixed("2", "_IdleWatcher and CompatTCPServer's defect-2 parts")
                )
            await client.aclose()


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_patched_shutdown_closes_idle_connection_at_once(
    patched_hypercorn: None, protocol: str
) -> None:
    with trio.fail_after(15):
        async with _serving(_QuartApp().app, _config(graceful=30)) as server:
            client = await _Client.connect(server.port, protocol)
            assert await client.get("/") == (200, b"ok")
            assert await _shutdown_duration(server) < 5
            await client.wait_closed()
            await client.aclose()


async def _long_poll_across_shutdown(
    server: _Server, app: _QuartApp | _RawLongPoll, protocol: str
) -> tuple[bool, float]:
    """A request in flight when shutdown starts, answered after it: was the response
    complete, and how long did serve() take to return?"""
    client = await _Client.connect(server.port, protocol)
    await client.send_request("/slow")
    await app.arrived.wait()
    started = trio.current_time()
    server.stop.set()
    await trio.testing.wait_all_tasks_blocked()  # Hypercorn has seen the shutdown
    app.release.set()
    try:
        answered = await client.read_response() == (200, b"late")
    except AssertionError:  # closed before the end of the response
        answered = False
    await server.stopped.wait()
    assert server.error is None, server.error
    await client.aclose()
    return answered, trio.current_time() - started


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_stock_defect2_long_poll_answered_during_shutdown(
    stock_hypercorn: None, protocol: str
) -> None:
    # Measured: h11 gets its response, then shutdown waits graceful_timeout for the
    # connection; h2 also loses the response's END_STREAM (taken by a cancelled flush).
    app = _QuartApp()
    with trio.fail_after(15):
        async with _serving(app.app, _config(graceful=1)) as server:
            answered, duration = await _long_poll_across_shutdown(server, app, protocol)
            if answered and duration < 0.8:
                pytest.fail(
                    f"the {protocol} long-poll was answered and shutdown did not wait. "
                    + _upstream_fixed("2", "close_soon() and the shielded send_lock wait")
                )


@pytest.mark.parametrize("protocol", ["h11", "h2"])
async def test_patched_long_poll_answered_during_shutdown(
    patched_hypercorn: None, protocol: str
) -> None:
    app = _QuartApp()
    with trio.fail_after(15):
        async with _serving(app.app, _config(graceful=30)) as server:
            answered, duration = await _long_poll_across_shutdown(server, app, protocol)
            assert answered, "the response did not arrive complete"
            assert duration < 5


# --- defect 4: an HTTP/2 response ending during shutdown loses its END_STREAM -------------


class _RawLongPoll:
    """Raw ASGI (so defect 2 plays no part): every request waits for `release`."""

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.release = trio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _streaming_app(scope, receive, send)
            return
        self.arrived.set()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"late"})


async def _h2_responses_ending_in_shutdown(attempts: int) -> list[bool]:
    """Whether each response arrived complete; the race is lost about half the time."""
    complete = []
    for _ in range(attempts):
        app = _RawLongPoll()
        async with _serving(app, _config(graceful=2)) as server:
            answered, _ = await _long_poll_across_shutdown(server, app, "h2")
        complete.append(answered)
    return complete


async def test_stock_defect4_h2_response_ending_in_shutdown_is_truncated(
    stock_hypercorn: None,
) -> None:
    with trio.fail_after(20):
        complete = await _h2_responses_ending_in_shutdown(12)
    if all(complete):
        pytest.fail(
            "12 h2 responses ending during shutdown all arrived complete. "
            + _upstream_fixed("4", "CompatH2Protocol")
        )


async def test_patched_h2_response_ending_in_shutdown_is_complete(
    patched_hypercorn: None,
) -> None:
    with trio.fail_after(20):
        complete = await _h2_responses_ending_in_shutdown(12)
    assert all(complete), f"truncated responses: {complete.count(False)} of 12"


# --- defect 3: one accepted connection per scheduler pass ---------------------------------

PENDING = 32


async def _accept_pending(listener: trio.abc.Listener[trio.SocketStream]) -> tuple[int, int]:
    """Connect PENDING clients, then accept them all; returns (accepted, scheduler passes)."""
    inner = listener.listener if isinstance(listener, BatchingListener) else listener
    assert isinstance(inner, trio.SocketListener)
    port = inner.socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(PENDING)]
    passes = 0

    async def count_passes(task_status: trio.TaskStatus[None]) -> None:
        nonlocal passes
        task_status.started()
        while True:
            passes += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        await nursery.start(count_passes)
        before = passes
        accepted = [await listener.accept() for _ in range(PENDING)]
        used = passes - before
        nursery.cancel_scope.cancel()
    peers = {stream.socket.getpeername()[1] for stream in accepted}
    assert peers == {client.socket.getsockname()[1] for client in clients}
    for stream in (*accepted, *clients):
        await stream.aclose()
    return len(accepted), used


async def _listener() -> trio.SocketListener:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    assert isinstance(listener, trio.SocketListener)
    return listener


async def test_stock_defect3_socket_listener_needs_a_pass_per_accept() -> None:
    with trio.fail_after(10):
        async with await _listener() as listener:
            accepted, passes = await _accept_pending(listener)
    assert accepted == PENDING
    if passes < PENDING - 2:
        pytest.fail(
            f"trio.SocketListener accepted {PENDING} connections in {passes} scheduler passes. "
            + _upstream_fixed("3", "BatchingListener")
        )


async def test_patched_batching_listener_drains_accept_queue() -> None:
    with trio.fail_after(10):
        async with BatchingListener(await _listener()) as listener:
            accepted, passes = await _accept_pending(listener)
    assert accepted == PENDING
    assert passes <= 3, f"{passes} scheduler passes to accept {PENDING} pending connections"


async def test_batching_listener_aclose_closes_pending_connections() -> None:
    with trio.fail_after(10):
        listener = BatchingListener(await _listener())
        port = listener.listener.socket.getsockname()[1]
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(4)]
        first = await listener.accept()
        await listener.aclose()
        await first.aclose()
        for stream in clients:
            with suppress(trio.BrokenResourceError):
                assert await stream.receive_some() == b""
            await stream.aclose()


# --- defect 8: `100 Continue` before the app has run ---------------------------------------


async def _refuses_without_reading(scope: Any, receive: Any, send: Any) -> None:
    """Raw ASGI: answers 401 at once, never asking for the body."""
    if scope["type"] == "lifespan":
        await _streaming_app(scope, receive, send)
        return
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b"no"})


async def _first_answer_to_expect_continue(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        first = b""
        while b"\r\n\r\n" not in first:
            data = await stream.receive_some()
            assert data, first
            first += data
        return first


async def test_stock_defect8_100_continue_precedes_a_refusal(stock_hypercorn: None) -> None:
    with trio.fail_after(10):
        async with _serving(_refuses_without_reading, _config()) as server:
            first = await _first_answer_to_expect_continue(server.port)
            server.stop.set()
    if not first.startswith(b"HTTP/1.1 100 "):
        pytest.fail(
            f"stock Hypercorn answered {first[:20]!r} first. "
            + _upstream_fixed("8", "CompatH11Protocol's continue hold")
        )


async def test_patched_100_continue_waits_for_the_app_to_ask(patched_hypercorn: None) -> None:
    app = hypercorn_compat.wait_for_body_request(_refuses_without_reading)
    with trio.fail_after(10):
        async with _serving(app, _config()) as server:
            first = await _first_answer_to_expect_continue(server.port)
            server.stop.set()
    assert first.startswith(b"HTTP/1.1 401 "), first


# --- apply() ------------------------------------------------------------------------------


async def test_apply_is_idempotent_and_patches_only_hypercorn_run(patched_hypercorn: None) -> None:
    seen = _RUN_GLOBALS["trio"]
    hypercorn_compat.apply()
    assert _RUN_GLOBALS["trio"] is seen
    assert _RUN_GLOBALS["TCPServer"] is CompatTCPServer
    assert _PROTOCOL_GLOBALS["H2Protocol"] is CompatH2Protocol
    assert seen.open_nursery is trio.open_nursery
    assert trio.SocketListener is not seen.SocketListener  # trio itself is untouched
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen()
    listener = seen.SocketListener(sock)
    assert isinstance(listener, BatchingListener)
    await listener.aclose()


def test_apply_warns_on_unmeasured_version(
    stock_hypercorn: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(hypercorn_compat, "version", lambda name: "0.99.0")
    with caplog.at_level(logging.WARNING, logger="emulator.hypercorn_compat"):
        hypercorn_compat.apply()
    assert "hypercorn 0.99.0 is installed" in caplog.text
    assert _RUN_GLOBALS["TCPServer"] is CompatTCPServer


def test_apply_refuses_changed_internals(stock_hypercorn: None) -> None:
    _RUN_GLOBALS["TCPServer"] = type("TCPServer", (), {})
    with pytest.raises(RuntimeError, match="update or remove"):
        hypercorn_compat.apply()
    assert _RUN_GLOBALS["trio"] is trio
    assert _PROTOCOL_GLOBALS["H2Protocol"] is H2Protocol
