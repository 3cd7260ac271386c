"""The emulator's own HTTP/2 server (transport.h2), with small ASGI apps and a raw h2 client.

What HTTP/2 adds over the HTTP/1.1 tests: a response cut short is reset, not left hanging;
request bodies are flow controlled by what the app reads; GOAWAY at shutdown; many streams
on one connection; a client that breaks the protocol loses its connection, and only that.
The job plane and every route over h2c and HTTP/2 over TLS are covered by the service tests.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
import trio
from emulatorrun import Running

from emulator.platform.errors import FamilyMap
from emulator.transport.h2 import STREAM_WINDOW, H2Server
from emulator.transport.httpcommon import ServerLimits

App = Callable[[dict[str, Any], Any, Any], Any]
LIMITS = ServerLimits(max_header_bytes=64 * 1024, keep_alive_timeout=75.0, head_timeout=30.0)


@asynccontextmanager
async def serving(app: App, limits: ServerLimits = LIMITS) -> AsyncIterator[tuple[H2Server, int]]:
    """An H2Server on a loopback port (h2c with prior knowledge), until the block ends."""
    server = H2Server(app, limits, FamilyMap())

    async def handler(stream: trio.SocketStream) -> None:
        await server.serve_connection(stream, scheme="http")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        nursery.start_soon(server.expire_connections)
        yield server, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


class Client:
    """A raw HTTP/2 client: frames go out when asked, events are read one batch at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.closed = False

    @classmethod
    async def connect(cls, port: int) -> Client:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        client.conn.initiate_connection()
        await client.flush()
        # The server's SETTINGS (its windows) before anything else.
        await client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        return client

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def events(self) -> list[h2.events.Event]:
        """The next batch of events; [] once the server has closed the connection."""
        data = await self.stream.receive_some(65536)
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id:
                self.conn.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
        await self.flush()
        return events

    async def until(self, wanted: Callable[[h2.events.Event], bool]) -> list[h2.events.Event]:
        """Every event up to and including the first `wanted` one."""
        seen: list[h2.events.Event] = []
        while True:
            batch = await self.events()
            assert batch, f"connection closed; saw {seen}"
            for event in batch:
                seen.append(event)
                if wanted(event):
                    return seen

    async def request(
        self, path: str, method: str = "GET", body: bytes | None = None, end: bool = True
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", b"test"),
        ]
        self.conn.send_headers(stream_id, headers, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=end)
        await self.flush()
        return stream_id

    async def response(self, stream_id: int) -> tuple[int, bytes]:
        status, body = 0, b""
        while True:
            batch = await self.events()
            assert batch, "connection closed before the response ended"
            for event in batch:
                if getattr(event, "stream_id", None) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers or [])[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                elif isinstance(event, h2.events.StreamEnded):
                    return status, body
                elif isinstance(event, h2.events.StreamReset):
                    raise AssertionError(f"stream {stream_id} reset")

    async def wait_closed(self) -> list[h2.events.Event]:
        seen: list[h2.events.Event] = []
        while not self.closed:
            seen += await self.events()
        return seen

    async def aclose(self) -> None:
        await self.stream.aclose()


async def respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def read_all(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request"
        body += message["body"]
        if not message["more_body"]:
            return body


async def echo_path(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await respond(send, 200, scope["path"].encode())


# A response cut short, or never started -----------------------------------------------------------


async def test_a_streamed_response_the_app_abandons_is_reset() -> None:
    async def cut(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})

    with trio.fail_after(10):
        async with serving(cut) as (_, port):
            client = await Client.connect(port)
            stream_id = await client.request("/stream")
            seen = await client.until(lambda e: isinstance(e, h2.events.StreamReset))
            await client.aclose()
    reset = seen[-1]
    assert isinstance(reset, h2.events.StreamReset)
    assert reset.stream_id == stream_id
    assert reset.error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
    data = [e for e in seen if isinstance(e, h2.events.DataReceived)]
    assert b"".join(e.data or b"" for e in data) == b"partial"
    assert not any(isinstance(e, h2.events.StreamEnded) for e in seen)


async def test_an_app_that_answers_nothing_gets_a_json_500() -> None:
    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    with trio.fail_after(10):
        async with serving(silent) as (_, port):
            client = await Client.connect(port)
            status, body = await client.response(await client.request("/nothing"))
            # The connection still serves.
            again = await client.response(await client.request("/nothing"))
            await client.aclose()
    assert status == 500
    assert "error" in json.loads(body) or "errorCode" in json.loads(body)
    assert again[0] == 500


# Flow control -------------------------------------------------------------------------------


async def test_an_app_reading_slowly_holds_the_uploader_at_the_window() -> None:
    gate = trio.Event()
    taken: list[int] = []

    async def slow_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await gate.wait()
        body = await read_all(receive)
        taken.append(len(body))
        await respond(send, 200, str(len(body)).encode())

    total = 3 * STREAM_WINDOW
    with trio.fail_after(20):
        async with serving(slow_reader) as (_, port):
            client = await Client.connect(port)
            stream_id = await client.request("/upload", "POST", b"", end=False)
            sent = 0
            # Send until the stream's window is used up.
            while client.conn.local_flow_control_window(stream_id) > 0:
                size = min(
                    client.conn.local_flow_control_window(stream_id),
                    client.conn.max_outbound_frame_size,
                )
                client.conn.send_data(stream_id, b"x" * size)
                sent += size
            await client.flush()
            # A PING round trip: every frame the server sent before its answer has arrived.
            client.conn.ping(b"12345678")
            await client.flush()
            await client.until(lambda e: isinstance(e, h2.events.PingAckReceived))
            held_at = sent
            window_while_held = client.conn.local_flow_control_window(stream_id)
            assert taken == []
            gate.set()
            # Now the app reads, and its reads open the window for the rest.
            while sent < total:
                window = client.conn.local_flow_control_window(stream_id)
                if window == 0:
                    await client.events()
                    continue
                size = min(window, client.conn.max_outbound_frame_size, total - sent)
                client.conn.send_data(stream_id, b"x" * size)
                sent += size
                await client.flush()
            client.conn.end_stream(stream_id)
            await client.flush()
            status, body = await client.response(stream_id)
            await client.aclose()
    assert held_at == STREAM_WINDOW
    assert window_while_held == 0
    assert (status, body) == (200, str(total).encode())
    assert taken == [total]


# Many streams on one connection -----------------------------------------------------------------


async def test_many_concurrent_streams_each_get_their_own_answer() -> None:
    answers: dict[int, tuple[int, str]] = {}
    with trio.fail_after(20):
        async with (
            serving(echo_path) as (_, port),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", http1=False, http2=True
            ) as client,
        ):

            async def one(n: int) -> None:
                response = await client.get(f"/item/{n}")
                answers[n] = (response.status_code, response.text)
                assert response.http_version == "HTTP/2"

            async with trio.open_nursery() as nursery:
                for n in range(300):
                    nursery.start_soon(one, n)
    assert answers == {n: (200, f"/item/{n}") for n in range(300)}


async def test_a_large_response_is_split_by_frame_size_and_window() -> None:
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB, beyond the client's default windows

    async def big(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await respond(send, 200, payload)

    with trio.fail_after(20):
        async with serving(big) as (_, port):
            client = await Client.connect(port)
            status, body = await client.response(await client.request("/big"))
            await client.aclose()
    assert status == 200
    assert body == payload


# Shutdown and idle connections ---------------------------------------------------------------


async def test_drain_sends_goaway_and_lets_the_open_stream_finish() -> None:
    gate = trio.Event()
    started = trio.Event()

    async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        await gate.wait()
        await respond(send, 200, b"finished")

    with trio.fail_after(10):
        async with serving(held) as (server, port):
            idle = await Client.connect(port)
            busy = await Client.connect(port)
            stream_id = await busy.request("/held")
            await started.wait()
            server.drain()
            idle_events = await idle.wait_closed()
            gate.set()
            busy_events = await busy.wait_closed()
            await idle.aclose()
            await busy.aclose()
    idle_goaway = [e for e in idle_events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in idle_goaway] == [h2.errors.ErrorCodes.NO_ERROR]
    body = b"".join(
        e.data or b""
        for e in busy_events
        if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
    )
    assert body == b"finished"
    ended = [e for e in busy_events if isinstance(e, h2.events.StreamEnded)]
    assert [e.stream_id for e in ended] == [stream_id]
    busy_goaway = [e for e in busy_events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [(e.error_code, e.last_stream_id) for e in busy_goaway] == [
        (h2.errors.ErrorCodes.NO_ERROR, stream_id)
    ]


async def test_an_httpx_request_in_flight_at_drain_gets_its_answer() -> None:
    # httpx (so the platform SDK) fails every open stream when a GOAWAY arrives: the
    # GOAWAY of a busy connection must follow its last response.
    gate = trio.Event()
    started = trio.Event()
    answers: list[tuple[int, str]] = []

    async def held(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.set()
        await gate.wait()
        await respond(send, 200, b"finished")

    with trio.fail_after(10):
        async with (
            serving(held) as (server, port),
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", http1=False, http2=True
            ) as client,
        ):

            async def ask() -> None:
                response = await client.get("/held")
                answers.append((response.status_code, response.text))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                await started.wait()
                server.drain()
                gate.set()
    assert answers == [(200, "finished")]


async def test_an_idle_connection_closes_at_the_keep_alive_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limits = ServerLimits(max_header_bytes=64 * 1024, keep_alive_timeout=30.0, head_timeout=10.0)
    with trio.fail_after(300):
        async with serving(echo_path, limits) as (_, port):
            client = await Client.connect(port)
            assert await client.response(await client.request("/once")) == (200, b"/once")
            opened = trio.current_time()
            events = await client.wait_closed()
            waited = trio.current_time() - opened
            await client.aclose()
    assert 30.0 <= waited <= 32.0
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


# Protocol errors ----------------------------------------------------------------------------------


async def test_a_malformed_frame_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        async with serving(echo_path) as (_, port):
            bad = await Client.connect(port)
            # A DATA frame on stream 0 (length 4, type DATA, no flags, stream 0).
            await bad.stream.send_all(b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd")
            events = await bad.wait_closed()
            await bad.aclose()
            good = await Client.connect(port)
            answer = await good.response(await good.request("/after"))
            await good.aclose()
    goaway = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert [e.error_code for e in goaway] == [h2.errors.ErrorCodes.PROTOCOL_ERROR]
    assert answer == (200, b"/after")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_settings_frame_of_the_wrong_size_closes_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(10):
        async with serving(echo_path) as (_, port):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            # SETTINGS with a 5-byte payload (settings are 6 bytes each): FRAME_SIZE_ERROR.
            await stream.send_all(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                + b"\x00\x00\x05\x04\x00\x00\x00\x00\x00"
                + b"\x00" * 5
            )
            while await stream.receive_some(65536):
                pass
            await stream.aclose()
            good = await Client.connect(port)
            answer = await good.response(await good.request("/after"))
            await good.aclose()
    assert answer == (200, b"/after")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# Through the emulator ---------------------------------------------------------------------------


async def test_a_request_head_over_the_limit_gets_a_json_431_over_h2c(
    emulator: Running,
) -> None:
    with trio.fail_after(10):
        async with emulator.client(http2=True) as client:
            response = await client.get(
                "/api/v2/ontologies", headers={"x-padding": "p" * (70 * 1024)}
            )
            after = await client.get("/api/v2/ontologies")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 431
    assert response.json()["errorName"] == "Default:RequestHeaderFieldsTooLarge"
    # The connection still serves (no token: 401).
    assert after.status_code == 401
