"""Malformed HTTP/2 requests (RFC 9113, sections 8.1.1, 8.2 and 8.3): the one-pass field check
(transport.h2fields) and what the server does with a malformed request: it resets that stream
with PROTOCOL_ERROR, the app never sees it, and the connection goes on serving.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from test_h2 import Client, echo_path, read_all, respond, serving

from emulator.transport.h2fields import request_problem, trailers_problem

GOOD = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/a?b=c"),
    (b":authority", b"example.test:80"),
    (b"accept", b"*/*"),
    (b"x-empty", b""),
    (b"x-tab", b"a\tb"),
    (b"x-latin", "caf\u00e9".encode("latin-1")),
    (b"te", b"trailers"),
]


def with_fields(*changes: tuple[bytes, bytes | None]) -> list[tuple[bytes, bytes]]:
    """GOOD with fields replaced (value None drops them) or appended."""
    fields = list(GOOD)
    for name, value in changes:
        index = next((i for i, (n, _) in enumerate(fields) if n == name), None)
        if value is None:
            assert index is not None
            del fields[index]
        elif index is None:
            fields.append((name, value))
        else:
            fields[index] = (name, value)
    return fields


@pytest.mark.parametrize(
    "fields",
    [
        GOOD,
        with_fields((b":authority", None)),
        with_fields((b":authority", None), (b"host", b"example.test")),
        with_fields((b"host", b"example.test:80")),
        with_fields((b"cookie", b"a=1"), (b"x-cookie", b"b=2")),
        [(b":method", b"CONNECT"), (b":authority", b"example.test:443")],
    ],
)
def test_well_formed_requests_pass(fields: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(fields) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (with_fields((b"Accept", b"x")), "illegal field name"),
        (with_fields((b"x y", b"x")), "illegal field name"),
        (with_fields((b"x:y", b"x")), "illegal field name"),
        (with_fields((b"", b"x")), "illegal field name"),
        (with_fields((b"x-a", b"a\r\nb: c")), "illegal value"),
        (with_fields((b"x-a", b"a\x00b")), "illegal value"),
        (with_fields((b"x-a", b"a\x7f")), "illegal value"),
        (with_fields((b"x-a", b" padded")), "illegal value"),
        (with_fields((b"x-a", b"padded\t")), "illegal value"),
        (with_fields((b"connection", b"close")), "connection-specific"),
        (with_fields((b"transfer-encoding", b"chunked")), "connection-specific"),
        (with_fields((b"upgrade", b"h2c")), "connection-specific"),
        (with_fields((b"te", b"gzip")), "te other than trailers"),
        (with_fields((b":method", None)), "no :method"),
        (with_fields((b":scheme", None)), "no :scheme"),
        (with_fields((b":path", None)), "no :path"),
        (with_fields((b":path", b"")), "no :path"),
        ([(b":status", b"200"), *GOOD], "not allowed"),
        ([(b":protocol", b"websocket"), *GOOD], "not allowed"),
        ([*GOOD, (b":method", b"POST")], "after a regular field"),
        ([(b":method", b"GET"), *GOOD[1:4], (b":method", b"POST")], "duplicate"),
        (with_fields((b":path", b"/a\nb")), "illegal value in pseudo-header"),
        (with_fields((b"host", b"other.test")), "differ"),
        ([*GOOD, (b"host", b"example.test:80"), (b"host", b"example.test:80")], "more than one"),
        ([(b":method", b"CONNECT"), (b":path", b"/"), (b":authority", b"a:1")], "CONNECT with"),
        ([(b":method", b"CONNECT")], "CONNECT without :authority"),
    ],
)
def test_malformed_requests_say_why(fields: list[tuple[bytes, bytes]], reason: str) -> None:
    problem = request_problem(fields)
    assert problem is not None
    assert reason in problem


def test_trailers_hold_no_pseudo_header_and_only_legal_fields() -> None:
    assert trailers_problem([(b"grpc-status", b"0"), (b"x-sum", b"abc")]) is None
    assert "in trailers" in (trailers_problem([(b":status", b"200")]) or "")
    assert "illegal field name" in (trailers_problem([(b"X-Sum", b"1")]) or "")


class LaxClient(Client):
    """A client whose h2 state machine sends header fields as given, malformed or not."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )

    async def send_raw(self, fields: list[tuple[bytes, bytes]], end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, fields, end_stream=end)
        await self.flush()
        return stream_id

    async def reset_code(self, stream_id: int) -> int:
        """The error code of the RST_STREAM the server sends for `stream_id`."""
        seen = await self.until(
            lambda e: (
                isinstance(e, (h2.events.StreamReset, h2.events.ResponseReceived))
                and e.stream_id == stream_id
            )
        )
        last = seen[-1]
        assert isinstance(last, h2.events.StreamReset), f"the server answered: {seen}"
        return int(last.error_code or 0)


@pytest.mark.parametrize(
    "fields",
    [
        with_fields((b"X-Upper", b"1")),
        with_fields((b"connection", b"keep-alive")),
        with_fields((b":path", None)),
        [*GOOD, (b":method", b"GET")],
        with_fields((b"x-a", b"a\x01b")),
    ],
)
async def test_a_malformed_request_resets_its_stream_and_the_connection_goes_on(
    fields: list[tuple[bytes, bytes]],
) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await echo_path(scope, receive, send)

    async with serving(app) as (_, port):
        client = await LaxClient.connect(port)
        bad = await client.send_raw(fields)
        assert await client.reset_code(bad) == h2.errors.ErrorCodes.PROTOCOL_ERROR
        good = await client.request("/after")
        assert await client.response(good) == (200, b"/after")
        await client.aclose()
    assert seen == ["/after"]


async def test_malformed_trailers_reset_the_stream_whose_body_the_app_reads() -> None:
    read: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body = await read_all(receive)
        except AssertionError:  # http.disconnect: the stream was reset
            return
        read.append(scope["path"])
        await respond(send, 200, body)

    async with serving(app) as (_, port):
        client = await LaxClient.connect(port)
        stream_id = await client.send_raw(with_fields((b":method", b"POST")), end=False)
        client.conn.send_data(stream_id, b"part")
        client.conn.send_headers(stream_id, [(b":path", b"/x")], end_stream=True)
        await client.flush()
        assert await client.reset_code(stream_id) == h2.errors.ErrorCodes.PROTOCOL_ERROR
        good = await client.request("/after")
        assert (await client.response(good))[0] == 200
        await client.aclose()
    assert read == ["/after"]
