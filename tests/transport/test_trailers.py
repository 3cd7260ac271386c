"""HTTP/2 response trailers (the ASGI `http.response.trailers` extension) on the emulator's own
HTTP/2 server, with small ASGI apps and a raw h2 client: trailers after a body, Trailers-Only
(one HEADERS frame), trailers in several messages, a response whose trailers never come; the
HTTP/1.1 server refusing gRPC with a 415 while the connection lives on; and gRPC unary calls
from the real `grpcio` client against a raw gRPC route (emulator.web.grpc) on both servers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
import pytest
import trio
from asgiserving import SERVERS, serving

from emulator.platform.errors import FamilyMap
from emulator.web.grpc import grpc_unary_route
from emulator.web.grpcwire import (
    GrpcError,
    StatusCode,
    decode_messages,
    encode_grpc_message,
    encode_message,
)
from emulator.web.rawasgi import RawDispatcher, RawRequest

App = Callable[[dict[str, Any], Any, Any], Any]
GRPC_TYPE = (b"content-type", b"application/grpc")


class H2Client:
    """A raw HTTP/2 client (h2c with prior knowledge): one request, every event of its stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )

    @classmethod
    async def connect(cls, port: int) -> H2Client:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        client.conn.initiate_connection()
        await client.stream.send_all(client.conn.data_to_send())
        return client

    async def exchange(self, path: str, body: bytes = b"") -> list[h2.events.Event]:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", b"test"),
            (b"te", b"trailers"),
            GRPC_TYPE,
        ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, body, end_stream=True)
        await self.stream.send_all(self.conn.data_to_send())
        seen: list[h2.events.Event] = []
        while True:
            data = await self.stream.receive_some(65536)
            assert data, f"connection closed; saw {seen}"
            for event in self.conn.receive_data(data):
                if getattr(event, "stream_id", None) != stream_id:
                    continue
                seen.append(event)
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return seen
            pending = self.conn.data_to_send()
            if pending:
                await self.stream.send_all(pending)

    async def aclose(self) -> None:
        await self.stream.aclose()


def kinds(events: list[h2.events.Event]) -> list[str]:
    return [type(event).__name__ for event in events]


def fields(event: h2.events.Event) -> dict[bytes, bytes]:
    return dict(getattr(event, "headers", None) or [])


async def exchange(app: App, body: bytes = b"") -> list[h2.events.Event]:
    with trio.fail_after(10):
        async with serving(app) as served:
            client = await H2Client.connect(served.port)
            events = await client.exchange("/pkg.Svc/Call", body)
            await client.aclose()
    return events


async def test_trailers_follow_the_body_and_the_scope_offers_them() -> None:
    offered: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        offered.append(scope["extensions"].get("http.response.trailers"))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [GRPC_TYPE], "trailers": True}
        )
        await send({"type": "http.response.body", "body": b"part one ", "more_body": True})
        await send({"type": "http.response.body", "body": b"part two"})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})

    events = await exchange(app)
    assert offered == [{}]
    assert kinds(events) == [
        "ResponseReceived",
        "DataReceived",
        "DataReceived",
        "TrailersReceived",
        "StreamEnded",
    ]
    head = fields(events[0])
    assert head[b":status"] == b"200"
    # No length: the trailers come after the body.
    assert b"content-length" not in head
    assert b"".join(getattr(e, "data", b"") or b"" for e in events) == b"part one part two"
    assert fields(events[3]) == {b"grpc-status": b"0"}


async def test_a_response_without_a_body_is_trailers_only() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [GRPC_TYPE], "trailers": True}
        )
        await send({"type": "http.response.body", "body": b""})
        await send(
            {
                "type": "http.response.trailers",
                "headers": [(b"grpc-status", b"5")],
                "more_trailers": True,
            }
        )
        await send({"type": "http.response.trailers", "headers": [(b"grpc-message", b"gone")]})

    events = await exchange(app)
    # One HEADERS frame with END_STREAM: status, headers and trailers together.
    assert kinds(events) == ["ResponseReceived", "StreamEnded"]
    assert events[0].stream_ended is not None  # type: ignore[attr-defined]
    head = fields(events[0])
    assert head[b":status"] == b"200"
    assert head[b"content-type"] == b"application/grpc"
    assert (head[b"grpc-status"], head[b"grpc-message"]) == (b"5", b"gone")


async def test_trailers_that_never_come_reset_the_stream_or_give_a_500() -> None:
    async def after_a_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"data"})

    async def without_a_body(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b""})

    cut = await exchange(after_a_body)
    assert kinds(cut) == ["ResponseReceived", "DataReceived", "StreamReset"]
    assert cut[-1].error_code == h2.errors.ErrorCodes.INTERNAL_ERROR  # type: ignore[attr-defined]
    nothing = await exchange(without_a_body)
    assert fields(nothing[0])[b":status"] == b"500"


async def test_trailers_without_the_announcement_are_a_server_error() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.trailers", "headers": []})

    events = await exchange(app)
    assert fields(events[0])[b":status"] == b"500"


# gRPC framing and the HTTP/1.1 refusal -----------------------------------------------------------


def test_message_framing_round_trips_and_broken_framing_is_an_error() -> None:
    assert encode_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert decode_messages(encode_message(b"") + encode_message(b"xy")) == [b"", b"xy"]
    for broken, status in [
        (b"\x00\x00\x00", StatusCode.INTERNAL),
        (b"\x00\x00\x00\x00\x05abc", StatusCode.INTERNAL),
        (b"\x01\x00\x00\x00\x01a", StatusCode.UNIMPLEMENTED),
    ]:
        with pytest.raises(GrpcError) as error:
            decode_messages(broken)
        assert error.value.code is status


def test_grpc_message_is_percent_encoded() -> None:
    assert encode_grpc_message("not found: 100% caf\u00e9") == "not found: 100%25 caf%C3%A9"


async def test_http1_refuses_grpc_with_a_415_and_keeps_the_connection() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    with trio.fail_after(10):
        async with serving(app) as served, httpx.AsyncClient(base_url=served.url) as client:
            refused = await client.post(
                "/pkg.Svc/Call",
                content=encode_message(b"x" * 100_000),
                headers={"content-type": "application/grpc+proto"},
            )
            after = await client.get("/plain")
            connections = client._transport._pool.connections  # type: ignore[attr-defined]
    assert refused.status_code == 415
    assert json.loads(refused.content)["error_description"].startswith("gRPC needs HTTP/2")
    assert (after.status_code, after.text) == (200, "plain")
    # Both requests went over the one connection.
    assert len(connections) == 1


# The real grpcio client -------------------------------------------------------------------------


def grpc_app() -> RawDispatcher:
    async def reverse(request: RawRequest, message: bytes) -> bytes:
        if message == b"missing":
            raise GrpcError(StatusCode.NOT_FOUND, "no such thing: 100%")
        if message == b"crash":
            raise ValueError("the handler failed")
        return message[::-1]

    async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return RawDispatcher(not_found, [grpc_unary_route("/test.Echo/Reverse", reverse)], FamilyMap())


def call_grpc(port: int, messages: list[bytes]) -> list[tuple[str, Any]]:
    """Each message through the generic unary API (bytes in, bytes out): ("ok", reply) or
    (status name, details)."""
    outcomes: list[tuple[str, Any]] = []
    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        reverse = channel.unary_unary("/test.Echo/Reverse")
        for message in messages:
            try:
                outcomes.append(("ok", reverse(message, timeout=10)))
            except grpc.RpcError as error:
                outcomes.append((error.code().name, error.details()))  # type: ignore[attr-defined]
    return outcomes


@pytest.mark.parametrize("server", SERVERS)
async def test_grpcio_unary_calls_against_a_raw_grpc_route(server: str) -> None:
    messages = [b"hello", b"", b"missing", b"crash", b"x" * 70_000]
    with trio.fail_after(30):
        async with serving(grpc_app(), server) as served:
            outcomes = await trio.to_thread.run_sync(call_grpc, served.port, messages)
    assert outcomes == [
        ("ok", b"olleh"),
        ("ok", b""),
        ("NOT_FOUND", "no such thing: 100%"),
        ("INTERNAL", "the emulator failed; see its log"),
        ("ok", b"x" * 70_000),
    ]
