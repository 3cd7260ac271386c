"""WebSocket over HTTP/1.1 (emulator.transport.websocket on the emulator's own server, and
Hypercorn), with raw WebSocket routes (emulator.web.websocket) and a real client library
(`websockets`, its sync client run in a worker thread): the handshake and subprotocols, text and
binary messages, ping/pong, the close handshake from either side, refusals (unknown path: 403;
an ApiError before accept: a JSON answer in the family; plain HTTP on a WebSocket path: 426),
the message size limit, a client that vanishes, and server shutdown (1001).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import httpx
import pytest
import trio
import trio.testing
from asgiserving import SERVERS, serving
from trio.testing import lockstep_stream_pair, memory_stream_pair, wait_all_tasks_blocked
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws_events
from wsproto.connection import ConnectionState

from emulator.platform.errors import FamilyMap
from emulator.transport.websocket import WebSocketLimits, WebSocketSession
from emulator.web.rawasgi import RawDispatcher, RawRequest, RawRoute
from emulator.web.websocket import RawWebSocket, WebSocketDisconnect, websocket_route

T = TypeVar("T")


@attrs.define
class Events:
    """What the handlers saw, and events the tests wait on."""

    codes: list[int] = attrs.field(factory=list)
    connected: trio.Event = attrs.field(factory=trio.Event)
    done: trio.Event = attrs.field(factory=trio.Event)


def make_app(seen: Events) -> RawDispatcher:
    async def echo(ws: RawWebSocket) -> None:
        try:
            await ws.accept("chat" if "chat" in ws.subprotocols else None)
            await ws.send_text(f"hello {ws.params['name']}")
            seen.connected.set()
            while True:
                message = await ws.receive()
                if message == "close-me":
                    await ws.close(4000, "bye")
                elif message == "crash":
                    raise ValueError("the handler failed")
                elif isinstance(message, bytes):
                    await ws.send_bytes(message[::-1])
                else:
                    await ws.send_text(message.upper())
        except WebSocketDisconnect as gone:
            seen.codes.append(gone.code)
            raise
        finally:
            seen.done.set()

    async def private(ws: RawWebSocket) -> None:
        raise ws.request.family.error(401, "unauthorized", "A token is required.")

    async def push(ws: RawWebSocket) -> None:
        try:
            await ws.accept()
            seen.connected.set()
            seen.codes.append(await ws.wait_disconnect())
        finally:
            seen.done.set()

    async def plain(request: RawRequest) -> None:
        await request.respond(200, b"plain")

    routes = [
        websocket_route("/echo/{name}", echo),
        websocket_route("/private", private),
        websocket_route("/push", push),
        RawRoute("GET", "/plain", plain),
    ]
    return RawDispatcher(not_found, routes, FamilyMap())


async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def client(url: str, **options: Any) -> ClientConnection:
    options.setdefault("open_timeout", 10)
    options.setdefault("close_timeout", 10)
    return connect(url.replace("http://", "ws://"), proxy=None, compression=None, **options)


async def in_thread(function: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(function)


@pytest.mark.parametrize("server", SERVERS)
async def test_messages_both_ways_and_a_client_close(server: str) -> None:
    seen = Events()

    def conversation(url: str) -> list[Any]:
        with client(f"{url}/echo/jane", subprotocols=["chat"]) as ws:
            answers: list[Any] = [ws.subprotocol, ws.recv(timeout=10)]
            ws.send("shout")
            answers.append(ws.recv(timeout=10))
            ws.send(b"\x01\x02\x03")
            answers.append(ws.recv(timeout=10))
            ws.send("x" * 100_000)
            answers.append(len(ws.recv(timeout=10)))
            pong = ws.ping(b"are you there")
            answers.append(pong.wait(10))
        return answers

    with trio.fail_after(20):
        async with serving(make_app(seen), server) as served:
            answers = await in_thread(lambda: conversation(served.url))
            await seen.done.wait()
    assert answers == ["chat", "hello jane", "SHOUT", b"\x03\x02\x01", 100_000, True]
    # Hypercorn 0.18 reports every client close as 1006 (it drops the client's code).
    assert seen.codes == [1000 if server == "emulator" else 1006]


@pytest.mark.parametrize("server", SERVERS)
async def test_the_server_closes_with_a_code_and_a_reason(server: str) -> None:
    seen = Events()

    def conversation(url: str) -> tuple[int, str]:
        with client(f"{url}/echo/x") as ws:
            ws.recv(timeout=10)
            ws.send("close-me")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code, closed.value.rcvd.reason

    with trio.fail_after(20):
        async with serving(make_app(seen), server) as served:
            assert await in_thread(lambda: conversation(served.url)) == (4000, "bye")
            await seen.done.wait()
    assert seen.codes == [4000]


@pytest.mark.parametrize("server", SERVERS)
async def test_a_failing_handler_closes_with_1011(server: str) -> None:
    seen = Events()

    def conversation(url: str) -> int:
        with client(f"{url}/echo/x") as ws:
            ws.recv(timeout=10)
            ws.send("crash")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    with trio.fail_after(20):
        async with serving(make_app(seen), server) as served:
            assert await in_thread(lambda: conversation(served.url)) == 1011


@pytest.mark.parametrize("server", SERVERS)
async def test_refusals_are_http_answers(server: str) -> None:
    def refused(url: str) -> tuple[int, bytes]:
        with pytest.raises(InvalidStatus) as refusal:
            client(url)
        response = refusal.value.response
        return response.status_code, bytes(response.body or b"")

    with trio.fail_after(20):
        async with serving(make_app(Events()), server) as served:
            unknown = await in_thread(lambda: refused(f"{served.url}/nowhere"))
            private = await in_thread(lambda: refused(f"{served.url}/private"))
            # A route that is not a WebSocket route is no WebSocket either.
            plain = await in_thread(lambda: refused(f"{served.url}/plain"))
            async with httpx.AsyncClient(base_url=served.url) as http:
                upgrade_required = await http.get("/push")
                # The route table's pseudo-method, sent as a plain HTTP method.
                pseudo = await http.request("WEBSOCKET", "/push")
                ok = await http.get("/plain")
    assert unknown[0] == 403
    assert plain[0] == 403
    assert private[0] == 401
    assert json.loads(private[1]) == {
        "error": "unauthorized",
        "error_description": "A token is required.",
    }
    assert upgrade_required.status_code == 426
    assert upgrade_required.headers["upgrade"] == "websocket"
    assert pseudo.status_code == 426
    assert ok.text == "plain"


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    seen = Events()

    def conversation(url: str) -> tuple[str, int]:
        with client(f"{url}/echo/x") as ws:
            ws.recv(timeout=10)
            ws.send("a" * 1000)
            first = ws.recv(timeout=10)
            assert isinstance(first, str)
            ws.send("b" * 1025)
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        return first, closed.value.rcvd.code

    limits = WebSocketLimits(max_message_bytes=1024)
    with trio.fail_after(20):
        async with serving(make_app(seen), websocket_limits=limits) as served:
            first, code = await in_thread(lambda: conversation(served.url))
            await seen.done.wait()
    assert (first, code) == ("A" * 1000, 1009)
    assert seen.codes == [1009]


@pytest.mark.parametrize("server", SERVERS)
async def test_a_client_that_vanishes_is_a_1006_disconnect(server: str) -> None:
    seen = Events()

    def vanish(url: str) -> None:
        ws = client(f"{url}/push")
        # No close frame: the TCP connection just ends.
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()

    with trio.fail_after(20):
        async with serving(make_app(seen), server) as served:
            await in_thread(lambda: vanish(served.url))
            await seen.done.wait()
    assert seen.codes == [1006]


async def test_shutdown_closes_open_websockets_with_1001() -> None:
    """The emulator's own server only: Hypercorn 0.18 leaves an open WebSocket alone until its
    graceful timeout, then cancels the app and closes with 1011. A service that must end its
    WebSockets cleanly on both servers closes them from its own shutdown (e.g. a feed close)."""
    seen = Events()
    server = "emulator"

    def wait_for_close(url: str) -> int:
        with client(f"{url}/push") as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        return closed.value.rcvd.code

    codes: list[int] = []
    with trio.fail_after(20):
        async with serving(make_app(seen), server) as served, trio.open_nursery() as nursery:

            async def run_client() -> None:
                codes.append(await in_thread(lambda: wait_for_close(served.url)))

            nursery.start_soon(run_client)
            await seen.connected.wait()
            served.drain()
            await seen.done.wait()
    assert codes == [1001]
    assert seen.codes == [1001]


# Byte-level: the handshake checks, and frames that arrive with the request head ----------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_head(path: str, *, key: str | None = KEY) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: test",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def masked_text_frame(text: str) -> bytes:
    """A client frame (FIN, text, masked), built by hand."""
    payload = text.encode()
    mask = b"\x11\x22\x33\x44"
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    seen = b""
    while chunk := await stream.receive_some(65536):
        seen += chunk
    return seen


async def test_a_handshake_without_a_key_is_refused_before_the_app_runs() -> None:
    seen = Events()
    with trio.fail_after(10):
        async with serving(make_app(seen)) as served:
            stream = await trio.open_tcp_stream("127.0.0.1", served.port)
            async with stream:
                await stream.send_all(upgrade_head("/echo/x", key=None))
                answer = await read_until_closed(stream)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert not seen.connected.is_set()


async def test_frames_sent_with_the_head_are_not_lost() -> None:
    seen = Events()
    with trio.fail_after(10):
        async with serving(make_app(seen)) as served:
            stream = await trio.open_tcp_stream("127.0.0.1", served.port)
            async with stream:
                # The head and a first message in one write (a client that does not wait).
                await stream.send_all(upgrade_head("/echo/x") + masked_text_frame("early"))
                answer = b""
                while b"EARLY" not in answer:
                    chunk = await stream.receive_some(65536)
                    assert chunk, answer
                    answer += chunk
    head, _, frames = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head.lower()
    # Two unmasked server text frames: the greeting, then the echo.
    assert frames == b"\x81\x07hello x" + b"\x81\x05EARLY"


# Through the whole emulator app (request log, head limit, raw routes, Quart behind) -------------


@pytest.mark.parametrize("http_server", SERVERS)
async def test_the_emulator_refuses_websockets_it_does_not_serve_and_keeps_serving(
    start_emulator: Any, http_server: str
) -> None:
    running = await start_emulator(http_server=http_server)

    def refused() -> int:
        with (
            pytest.raises(InvalidStatus) as refusal,
            connect(
                running.https_url.replace("https://", "wss://") + "/api/v2/ontologies",
                ssl=running.ssl_context(),
                proxy=None,
                open_timeout=10,
            ),
        ):
            pass  # the handshake is refused: the block is never entered
        return refusal.value.response.status_code

    with trio.fail_after(30):
        status = await in_thread(refused)
        async with running.client(tls=True) as http:
            health = await http.get("/_emulate/health")
    assert status == 403
    assert health.status_code == 200


# The session on an in-memory stream: the receive queue is bounded ------------------------------


def client_handshake() -> tuple[WSConnection, list[tuple[bytes, bytes]]]:
    client = WSConnection(ConnectionType.CLIENT)
    handshake = client.send(ws_events.Request(host="test", target="/"))
    head = handshake.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    return client, [
        (name, value) for name, _, value in (line.partition(b": ") for line in head[1:])
    ]


async def test_a_client_faster_than_the_app_is_held_back_after_the_queue() -> None:
    # Lockstep: a send returns only once the other side has read it, so a reader that stops
    # reading stops the client.
    client_side, server_side = lockstep_stream_pair()
    session = WebSocketSession(
        server_side,
        {"type": "websocket", "path": "/", "extensions": {}},
        WebSocketLimits(queue_messages=4),
    )
    release = trio.Event()
    taken: list[str] = []
    sent: list[int] = []

    async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await release.wait()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            taken.append(message["text"])

    client, headers = client_handshake()

    async def send_all_messages() -> None:
        for number in range(20):
            await client_side.send_all(client.send(ws_events.TextMessage(f"m{number}")))
            sent.append(number)
        await client_side.send_all(client.send(ws_events.CloseConnection(code=1000)))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                # As transport.h1 does: the socket closes once the session is over.
                async with server_side:
                    await session.run(slow_app, b"/", headers, b"")

            nursery.start_soon(serve)
            client.receive_data(await client_side.receive_some(65536))
            assert isinstance(next(client.events()), ws_events.AcceptConnection)
            nursery.start_soon(send_all_messages)
            await wait_all_tasks_blocked()
            # Four messages wait for the app, the reader holds a fifth and reads no further,
            # so the client is stuck in its next send.
            assert session._incoming.statistics().current_buffer_used == 4
            assert len(sent) < 8
            release.set()
            # The close frame gets an answer; reading it lets the server finish.
            while data := await client_side.receive_some(65536):
                client.receive_data(data)
    assert taken == [f"m{number}" for number in range(20)]
    assert len(sent) == 20


@pytest.mark.parametrize("answers_pings", [False, True])
async def test_server_pings_find_a_peer_that_stopped_answering(
    autojump_clock: trio.testing.MockClock, answers_pings: bool
) -> None:
    client_side, server_side = memory_stream_pair()
    limits = WebSocketLimits(ping_interval=10.0)
    session = WebSocketSession(
        server_side, {"type": "websocket", "path": "/", "extensions": {}}, limits
    )
    codes: list[int] = []
    pings: list[float] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        codes.append(message["code"])

    client, headers = client_handshake()

    async def peer() -> None:
        """Reads everything; answers pings only if `answers_pings`, and closes after 100 s."""
        with trio.move_on_after(100):
            while data := await client_side.receive_some(65536):
                client.receive_data(data)
                for event in client.events():
                    if isinstance(event, ws_events.Ping):
                        pings.append(trio.current_time())
                        if answers_pings:
                            await client_side.send_all(client.send(event.response()))
        if client.state is ConnectionState.OPEN:
            await client_side.send_all(client.send(ws_events.CloseConnection(code=1000)))

    started = trio.current_time()
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer)
            async with server_side:
                await session.run(app, b"/", headers, b"")
            nursery.cancel_scope.cancel()
    if answers_pings:
        assert codes == [1000]
        assert len(pings) == 9  # at 10, 20, ..., 90 s
    else:
        # The ping at 10 s is unanswered at 20 s: the peer counts as gone.
        assert codes == [1006]
        assert [round(at - started) for at in pings] == [10]
