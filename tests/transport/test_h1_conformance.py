"""HTTP/1.1 requests RFC 9112 refuses, and a client that stops reading (issue 16, defects 4, 6
and 11), on the emulator's own server and, where Hypercorn is patched for it, on Hypercorn.

Each refused request gets a 400 and the connection closes after it: a pipelined request sent
behind it is never answered.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
from emulatorrun import StartEmulator
from rawhttp import connect, parse_response, read_all

from emulator.platform.errors import FamilyMap
from emulator.transport.h1 import H1Server
from emulator.transport.h1read import illegal_head
from emulator.transport.httpcommon import ServerLimits

PATH = "/api/v2/ontologies"
FOLLOW_UP = b"GET /_emulate/health HTTP/1.1\r\nHost: t\r\n\r\n"


async def exchange(url: str, raw: bytes) -> tuple[int, int]:
    """Send `raw` then a pipelined follow-up; (the first status, how many answers came)."""
    stream, _ = await connect(url)
    async with stream:
        await stream.send_all(raw + FOLLOW_UP)
        data = await read_all(stream)
    return parse_response(data).status, data.count(b"HTTP/1.1 ")


BOTH_LENGTHS = (
    f"POST {PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    "b\r\nhello world\r\n0\r\n\r\n"
).encode()


@pytest.mark.parametrize("server", ["emulator", "hypercorn"])
async def test_content_length_with_transfer_encoding_is_400_and_closes(
    start_emulator: StartEmulator, server: str
) -> None:
    running = await start_emulator(http_server=server)
    with trio.fail_after(20):
        status, answers = await exchange(running.http_url, BOTH_LENGTHS)
    assert status == 400
    assert answers == 1


REFUSED = {
    "bare-lf": f"GET {PATH} HTTP/1.1\nHost: t\n\n".encode(),
    "bare-lf-in-one-line": f"GET {PATH} HTTP/1.1\r\nHost: t\nX-A: b\r\n\r\n".encode(),
    "control-byte-in-value": f"GET {PATH} HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n".encode(),
    "lowercase-method": f"get {PATH} HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    "http-2.0-request-line": f"GET {PATH} HTTP/2.0\r\nHost: t\r\n\r\n".encode(),
    "malformed-chunk-size": (
        b"POST /multipass/api/oauth2/token HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_a_request_rfc_9112_refuses_is_400_and_closes(
    start_emulator: StartEmulator, case: str
) -> None:
    running = await start_emulator()
    with trio.fail_after(20):
        status, answers = await exchange(running.http_url, REFUSED[case])
    assert status == 400
    assert answers == 1


async def test_a_head_split_over_many_reads_is_still_accepted(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator()
    raw = b"GET /_emulate/health HTTP/1.1\r\nHost: t\r\nX-A: b\r\nConnection: close\r\n\r\n"
    stream, _ = await connect(running.http_url)
    with trio.fail_after(20):
        async with stream:
            for i in range(len(raw)):
                await stream.send_all(raw[i : i + 1])
            data = await read_all(stream)
    assert parse_response(data).status == 200


async def test_a_client_that_stops_reading_is_closed_after_send_timeout() -> None:
    limits = ServerLimits(
        max_header_bytes=64 * 1024, keep_alive_timeout=75.0, head_timeout=30.0, send_timeout=0.5
    )
    body = b"x" * (32 * 1024 * 1024)
    ended = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    server = H1Server(app, limits, FamilyMap())

    async def handler(stream: trio.SocketStream) -> None:
        try:
            await server.serve_connection(stream, scheme="http")
        finally:
            ended.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
            nursery.start_soon(server.expire_connections)
            port = listeners[0].socket.getsockname()[1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            # The client never reads: the server's write stalls, then the connection closes.
            await ended.wait()
            assert server.open_connections == 0
            await client.aclose()
            nursery.cancel_scope.cancel()


async def test_a_broken_chunked_body_on_a_route_that_answers_anyway_is_answered_then_closed(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator()
    raw = (
        f"POST {PATH}/o/objects/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x\r\n"
        "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    ).encode()
    with trio.fail_after(20):
        for _ in range(5):
            status, answers = await exchange(running.http_url, raw)
            # The route's own answer (or 400 if it had none), never silence nor the follow-up.
            assert status in (400, 401, 404)
            assert answers == 1


GOOD_HEAD = b"GET / HTTP/1.1\r\nHost: t\r\nX: a\tb\xff\r\n\r\n"
BAD_HEADS = [
    b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\rX: y\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\x7f\r\n\r\n",
]


def test_the_head_check_sees_a_head_split_at_every_byte_the_same() -> None:
    body = b"\x00\x01\nbinary body"
    assert not illegal_head(GOOD_HEAD + body)
    for i in range(1, len(GOOD_HEAD)):
        first, rest = GOOD_HEAD[:i], GOOD_HEAD[i:] + body
        assert not illegal_head(first)
        assert not illegal_head(rest, first[-4:])
    for bad in BAD_HEADS:
        assert illegal_head(bad)
        for i in range(1, len(bad)):
            first, rest = bad[:i], bad[i:]
            assert illegal_head(first) or illegal_head(rest, first[-4:])


EXECUTE = "/contour-backend-multiplexer/api/module-group-multiplexer/compute-modules/jobs/execute"
TOKEN_PATH = "/multipass/api/oauth2/token"


async def first_answer_then_rest(url: str, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Send a head with `Expect: 100-continue` and no body; read the first answer's head, then
    send `body` and read everything else (the server closes: `Connection: close`)."""
    stream, _ = await connect(url)
    async with stream:
        await stream.send_all(head)
        first = b""
        while b"\r\n\r\n" not in first:
            data = await stream.receive_some(65536)
            assert data, first
            first += data
        if body:
            await stream.send_all(body)
        return first, first + await read_all(stream)


@pytest.mark.parametrize("server", ["emulator", "hypercorn"])
async def test_100_continue_comes_only_when_the_route_reads_the_body(
    start_emulator: StartEmulator, server: str
) -> None:
    running = await start_emulator(http_server=server)
    host = running.http_url.split("://", 1)[1]
    expect = "Expect: 100-continue\r\nConnection: close\r\n"
    # Refused before the body is wanted: the 401 is the only answer, no `100` before it.
    refused = (
        f"POST {EXECUTE} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer not-a-token\r\n"
        f"Content-Type: application/json\r\nContent-Length: 2\r\n{expect}\r\n"
    ).encode()
    with trio.fail_after(20):
        first, _ = await first_answer_then_rest(running.http_url, refused, b"")
    assert first.startswith(b"HTTP/1.1 401 "), first[:200]
    # A route that reads the body gets it after the `100`, then answers.
    form = b"grant_type=client_credentials&client_id=nobody&client_secret=wrong"
    wanted = (
        f"POST {TOKEN_PATH} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n"
        f"{expect}\r\n"
    ).encode()
    with trio.fail_after(20):
        first, everything = await first_answer_then_rest(running.http_url, wanted, form)
    assert first.startswith(b"HTTP/1.1 100 "), first[:200]
    final = everything.split(b"\r\n\r\n", 1)[1]
    assert parse_response(final).status == 401
