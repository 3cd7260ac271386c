"""How the emulator's HTTP/1.1 server writes responses (emulator.transport.h1write): the
framing chosen for each kind of answer, a Content-Length or chunked body checked against what
the app sends, HTTP/1.0 clients, HEAD, headers that would split the response refused with a
500, and the connection kept or closed as the request and the response say; byte for byte
over real sockets, read back with h11 as a client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
import pytest
import trio
from asgiserving import serving

from emulator.transport.h1write import BadResponse, Framing, start_response

DATE = b"Sat, 05 Dec 2026 12:00:00 GMT"


def head_of(
    status: int, headers: list[tuple[bytes, bytes]], **options: Any
) -> tuple[bytes, str, bool]:
    settings: dict[str, Any] = {
        "whole": None,
        "http10": False,
        "keep_alive": True,
        "head_only": False,
    }
    settings.update(options)
    head, framing, keep_alive = start_response(status, headers, date=DATE, **settings)
    return head, framing.kind, keep_alive


def test_a_whole_body_gets_a_length_and_a_streamed_one_is_chunked() -> None:
    head, kind, keep = head_of(200, [(b"content-type", b"text/plain")], whole=5)
    assert head == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: "
        + DATE
        + b"\r\ncontent-length: 5\r\n\r\n"
    )
    assert (kind, keep) == (Framing.LENGTH, True)
    head, kind, keep = head_of(200, [])
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert (kind, keep) == (Framing.CHUNKED, True)


def test_http10_clients_get_a_body_ended_by_closing() -> None:
    head, kind, keep = head_of(200, [(b"transfer-encoding", b"chunked")], http10=True)
    assert b"transfer-encoding" not in head
    assert head.endswith(b"connection: close\r\n\r\n")
    assert (kind, keep) == (Framing.CLOSE, False)


def test_declared_lengths_statuses_without_body_and_head() -> None:
    head, kind, _ = head_of(200, [(b"content-length", b"3")], whole=None)
    assert (head.count(b"content-length"), kind) == (1, Framing.LENGTH)
    # Both framings given: the length is dropped, the body is chunked (RFC 9112 6.3).
    head, kind, _ = head_of(200, [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")])
    assert (b"content-length" in head, kind) == (False, Framing.CHUNKED)
    for status in (101, 204, 304):
        assert head_of(status, [], whole=4)[1] == Framing.NONE
    head, kind, _ = head_of(200, [], whole=7, head_only=True)
    assert (b"content-length: 7" in head, kind) == (True, Framing.NONE)


def test_the_connection_closes_when_asked_by_either_side() -> None:
    assert head_of(200, [], whole=0, keep_alive=False)[0].endswith(b"connection: close\r\n\r\n")
    head, _, keep = head_of(200, [(b"Connection", b"close")], whole=0)
    assert head.count(b"onnection") == 1
    assert not keep


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-evil", b"a\r\nset-cookie: b=c")],
        [(b"x-evil", b"a\nb")],
        [(b"x-nul", b"a\x00b")],
        [(b"bad name", b"v")],
        [(b"bad:name", b"v")],
        [("x-text", "not bytes")],
        [(b"content-length", b"12x")],
        [(b"content-length", b"1"), (b"content-length", b"2")],
        [(b"transfer-encoding", b"gzip")],
    ],
)
def test_headers_that_cannot_be_written_are_refused(headers: Any) -> None:
    with pytest.raises(BadResponse):
        head_of(200, headers)


def test_a_length_body_must_match_and_a_chunked_one_is_framed() -> None:
    framing = Framing(Framing.LENGTH, 5)
    assert framing.frame(b"abc") == b"abc"
    with pytest.raises(BadResponse):
        framing.frame(b"def")
    short = Framing(Framing.LENGTH, 5)
    short.frame(b"ab")
    with pytest.raises(BadResponse):
        short.end()
    chunked = Framing(Framing.CHUNKED)
    assert chunked.frame(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert chunked.frame(b"") == b""
    assert chunked.end() == b"0\r\n\r\n"
    assert Framing(Framing.NONE).frame(b"dropped") == b""


App = Callable[[dict[str, Any], Any, Any], Any]


def app_sending(*messages: dict[str, Any]) -> App:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    return app


def start(status: int = 200, headers: list[tuple[Any, Any]] | None = None) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers or []}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


async def until_closed(app: App, request: bytes) -> bytes:
    """Everything the server writes for `request` until it closes the connection."""
    async with serving(app) as served:
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.send_all(request)
        raw = b""
        with trio.fail_after(30):
            while data := await stream.receive_some(65536):
                raw += data
        await stream.aclose()
    return raw


async def test_a_header_that_would_split_the_response_gets_a_500_instead() -> None:
    evil = [(b"x-evil", b"a\r\nset-cookie: stolen=1")]
    raw = await until_closed(
        app_sending(start(200, evil), body(b"never sent")),
        b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 500 ")
    assert b"stolen" not in raw
    assert b"never sent" not in raw


async def test_an_http10_client_gets_the_stream_unframed_then_the_end() -> None:
    raw = await until_closed(
        app_sending(start(), body(b"first,", more=True), body(b"second")),
        b"GET /x HTTP/1.0\r\n\r\n",
    )
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head
    assert rest == b"first,second"


async def test_a_body_short_of_its_length_ends_the_connection() -> None:
    # Without the close, a client would wait for the seven missing bytes forever.
    raw = await until_closed(
        app_sending(start(200, [(b"content-length", b"10")]), body(b"abc")),
        b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.endswith(b"\r\n\r\nabc")


async def test_keep_alive_serves_pipelined_requests_until_one_asks_to_close() -> None:
    one = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"
    last = b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    raw = await until_closed(
        app_sending(start(), body(b"part;", more=True), body(b"end")), one + one + last
    )
    client = h11.Connection(h11.CLIENT)
    bodies = []
    client.receive_data(raw)
    client.receive_data(b"")
    for _ in range(3):
        client.send(h11.Request(method="GET", target="/x", headers=[("host", "h")]))
        client.send(h11.EndOfMessage())
        received = b""
        while not isinstance(event := client.next_event(), h11.EndOfMessage):
            if isinstance(event, h11.Data):
                received += event.data
            assert event is not h11.NEED_DATA
        bodies.append(received)
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    assert bodies == [b"part;end"] * 3
    assert raw.count(b"transfer-encoding: chunked") == 3
    assert raw.count(b"connection: close") == 1
