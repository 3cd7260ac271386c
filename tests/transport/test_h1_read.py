"""The HTTP/1.1 request reader (transport.h1read) on its own: heads and bodies fed whole and
cut at every byte, the checks RFC 9112 asks for with the status each gets, and the end of the
input at every point. The server around it is covered by test_h1.py and
test_h1_conformance.py.
"""

from __future__ import annotations

import itertools

import pytest

from emulator.transport.h1read import (
    CHUNK_LINE_BYTES,
    BadRequest,
    Phase,
    RequestHead,
    RequestReader,
)

MAX_HEAD = 8192
GET = b"GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nX-Pad:  spaced \t\r\nAccept: */*\r\n\r\n"
CHUNKED = (
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n"
    b"1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
    b"0\r\nX-Trailer: t\r\n\r\n"
)


def read_all(reader: RequestReader) -> tuple[RequestHead, bytes]:
    head = reader.read_head()
    assert head is not None
    body = b""
    while piece := reader.read_body():
        body += piece
    assert piece == b"", "the body must be complete"
    return head, body


def fed_in_pieces(data: bytes, cut: int) -> tuple[list[RequestHead], bytes]:
    """Feed `data` cut at `cut` (and after that, a byte at a time for the next 8): the heads
    and the concatenated bodies read."""
    reader = RequestReader(MAX_HEAD)
    cuts = sorted({0, cut, *range(cut + 1, min(cut + 9, len(data))), len(data)})
    heads: list[RequestHead] = []
    body = b""
    for start, end in itertools.pairwise(cuts):
        reader.feed(data[start:end])
        while True:
            if reader.phase is Phase.HEAD:
                head = reader.read_head()
                if head is None:
                    break
                heads.append(head)
            else:
                piece = reader.read_body()
                if piece is None:
                    break
                body += piece
    return heads, body


def test_a_head_is_parsed_names_lowered_values_stripped() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(GET)
    head, body = read_all(reader)
    assert (head.method, head.target, head.version) == (b"GET", b"/a?b=c", b"1.1")
    assert head.headers == [(b"host", b"example.test"), (b"x-pad", b"spaced"), (b"accept", b"*/*")]
    assert body == b""
    assert not head.expects_continue
    assert reader.phase is Phase.HEAD
    assert not reader.buffer


@pytest.mark.parametrize("cut", range(len(GET + CHUNKED)))
def test_pipelined_requests_cut_anywhere_read_the_same(cut: int) -> None:
    heads, body = fed_in_pieces(GET + CHUNKED, cut)
    assert [h.target for h in heads] == [b"/a?b=c", b"/up"]
    assert body == b"hello" + b"abcdefghijklmnopqrstuvwxyz"


def test_a_sized_body_stops_at_its_length_and_the_next_request_follows() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhel")
    head = reader.read_head()
    assert head is not None
    assert head.headers == [(b"host", b"h"), (b"content-length", b"5")]
    assert reader.read_body() == b"hel"
    assert reader.read_body() is None
    reader.feed(b"loGET / HTTP/1.0\r\n\r\n")
    assert reader.read_body() == b"lo"
    assert reader.read_body() == b""
    second = reader.read_head()
    assert second is not None
    assert (second.method, second.version, second.headers) == (b"GET", b"1.0", [])


def test_empty_lines_before_a_request_line_are_skipped() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"\r\n\r\n" + GET)
    assert read_all(reader)[0].target == b"/a?b=c"


def test_100_continue_is_wanted_until_a_body_byte_is_taken() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n")
    head = reader.read_head()
    assert head is not None
    assert head.expects_continue
    assert reader.waiting_for_continue
    assert reader.read_body() is None
    assert reader.waiting_for_continue
    reader.feed(b"ok")
    assert reader.read_body() == b"ok"
    assert not reader.waiting_for_continue
    http10 = RequestReader(MAX_HEAD)
    http10.feed(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert not http10.read_head().expects_continue  # type: ignore[union-attr]


HEAD_PROBLEMS = [
    (b"get / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nno colon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 12345678901234567890\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"v" * MAX_HEAD + b"\r\n\r\n", 431),
]


@pytest.mark.parametrize(("data", "status"), HEAD_PROBLEMS)
def test_a_bad_head_is_refused_with_its_status(data: bytes, status: int) -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(data)
    with pytest.raises(BadRequest) as refused:
        reader.read_head()
    assert refused.value.status == status


@pytest.mark.parametrize(("data", "status"), HEAD_PROBLEMS)
def test_a_bad_head_fed_a_byte_at_a_time_is_refused_the_same(data: bytes, status: int) -> None:
    reader = RequestReader(MAX_HEAD)

    def byte_by_byte() -> None:
        for index in range(len(data)):
            reader.feed(data[index : index + 1])
            reader.read_head()

    with pytest.raises(BadRequest) as refused:
        byte_by_byte()
    assert refused.value.status == status


def test_a_bare_lf_is_refused_before_the_head_ends() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"GET / HTTP/1.1\nHost: h\n")
    with pytest.raises(BadRequest):
        reader.read_head()


def test_a_head_still_arriving_past_the_limit_is_431() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"GET / HTTP/1.1\r\nX-Big: " + b"v" * MAX_HEAD)
    with pytest.raises(BadRequest) as refused:
        reader.read_head()
    assert refused.value.status == 431


def test_the_end_of_input_between_requests_is_quiet_and_inside_a_head_is_400() -> None:
    idle = RequestReader(MAX_HEAD)
    idle.feed(b"")
    assert idle.read_head() is None
    assert idle.eof
    cut = RequestReader(MAX_HEAD)
    cut.feed(b"GET / HTTP/1.1\r\nHo")
    assert cut.read_head() is None
    cut.feed(b"")
    with pytest.raises(BadRequest) as refused:
        cut.read_head()
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"5 5\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
        b"5\r\nhello\r\n0\r\nX-A: \x01\r\n\r\n",
        b"1" + b" " * CHUNK_LINE_BYTES + b"\r\nh\r\n0\r\n\r\n",
        b"11111111111111111\r\n",
    ],
)
def test_broken_chunked_framing_is_refused_and_stays_refused(body: bytes) -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert reader.read_head() is not None

    def whole_body() -> None:
        while reader.read_body():
            pass

    with pytest.raises(BadRequest) as refused:
        whole_body()
    assert refused.value.status == 400
    with pytest.raises(BadRequest):
        reader.read_body()
    assert reader.phase is Phase.BODY


@pytest.mark.parametrize("framing", ["Content-Length: 10", "Transfer-Encoding: chunked"])
def test_a_body_cut_short_by_the_end_of_input_is_refused(framing: str) -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(f"POST / HTTP/1.1\r\nHost: h\r\n{framing}\r\n\r\n".encode())
    assert reader.read_head() is not None
    reader.feed(b"5\r\nabc" if "chunked" in framing else b"abc")
    assert reader.read_body() == b"abc"
    assert reader.read_body() is None
    reader.feed(b"")
    with pytest.raises(BadRequest):
        reader.read_body()


def test_a_large_chunk_comes_out_as_it_arrives() -> None:
    reader = RequestReader(MAX_HEAD)
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n")
    assert reader.read_head() is not None
    assert reader.read_body() is None
    got = b""
    for index in range(16):
        reader.feed(bytes([index]) * 65536)
        piece = reader.read_body()
        assert piece is not None
        got += piece
    assert len(got) == 0x100000
    reader.feed(b"\r\n0\r\n\r\n")
    assert reader.read_body() == b""
    assert reader.phase is Phase.HEAD
