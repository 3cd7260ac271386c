"""The sans-IO HTTP/2 server codec (transport.h2codec, RFC 9113) driven frame by frame, no I/O.

Covers: requests with and without bodies, padding, trailers and CONTINUATION, whole or split
at any byte; connection errors and the GOAWAY each queues; stream errors that reset one
stream and keep the connection; REFUSED_STREAM past the stream limit; client resets and
frames on closed streams; flow control both ways (when window is given back, `window()`,
the bounds of `send_data`); `close()` and a client's GOAWAY; the response HPACK encoder
(checked with hpack's decoder) and HEADERS/CONTINUATION splitting; and the h2 library as
a real client talking to the codec.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple, cast

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hpack.table import HeaderTable

from emulator.transport.h2codec import (
    ConnectionEnded,
    DataReceived,
    Event,
    ProtocolFailure,
    RequestReceived,
    ServerConnection,
    StreamGone,
    StreamReset,
    TrailersReceived,
    WindowOpened,
)
from emulator.transport.h2hpack import encode as encode_fields
from emulator.transport.h2wire import (
    ACK,
    CONTINUATION,
    DATA,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    frame,
)

Fields = list[tuple[bytes, bytes]]

LIMITS = {
    "stream_window": 1024 * 1024,
    "connection_window": 4 * 1024 * 1024,
    "max_streams": 1000,
    "stream_limit": 2000,
    "header_list_limit": 128 * 1024,
}
GET: Fields = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"example.test"),
    (b":path", b"/"),
]
TRAILERS: Fields = [(b"x-checksum", b"abc")]
LARGEST_WINDOW = 2**31 - 1


def post(length: int | None = None) -> Fields:
    fields = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"example.test"),
        (b":path", b"/upload"),
    ]
    if length is not None:
        fields.append((b"content-length", str(length).encode()))
    return fields


# Frames -------------------------------------------------------------------------------------


class Frame(NamedTuple):
    kind: int
    flags: int
    stream_id: int
    payload: bytes


def parse(data: bytes) -> list[Frame]:
    """The codec's output as whole frames (it never writes half a frame)."""
    frames = []
    position = 0
    while position < len(data):
        head, flags, stream_id = FRAME_HEAD.unpack_from(data, position)
        stop = position + 9 + (head >> 8)
        assert stop <= len(data), "a frame cut short"
        frames.append(Frame(head & 0xFF, flags, stream_id, data[position + 9 : stop]))
        position = stop
    return frames


def word(value: int) -> bytes:
    return struct.pack(">I", value)


def settings(*pairs: tuple[int, int]) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", key, value) for key, value in pairs))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, word(increment))


def rst(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, word(code))


def data(stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    return frame(DATA, flags, stream_id, payload)


def padded(payload: bytes, pad: int) -> bytes:
    """A PADDED frame's payload: pad length, the data, then `pad` zero bytes."""
    return bytes((pad,)) + payload + bytes(pad)


def ping(payload: bytes = b"12345678", flags: int = 0) -> bytes:
    return frame(PING, flags, 0, payload)


def goaway(found: Frame) -> tuple[int, int]:
    """(last stream id, error code) of a GOAWAY."""
    assert found.kind == GOAWAY
    last, code = struct.unpack_from(">II", found.payload)
    return cast(int, last), cast(int, code)


def reset_code(found: Frame) -> int:
    assert found.kind == RST_STREAM
    return cast(int, struct.unpack(">I", found.payload)[0])


def response_decoder() -> hpack.Decoder:
    """A client's decoder, with room for the largest heads sent here."""
    return hpack.Decoder(max_header_list_size=1 << 20)


def decode(decoder: hpack.Decoder, block: bytes) -> Fields:
    return [(bytes(name), bytes(value)) for name, value in decoder.decode(block, raw=True)]


class Peer:
    """A hand-driven client: the codec under test, one HPACK encoder, the codec's output."""

    def __init__(self, *, handshake: bool = True, **limits: int) -> None:
        self.codec = ServerConnection(**(LIMITS | limits))
        self.codec.start()
        self.opening = parse(self.codec.data_to_send())
        self.encoder = hpack.Encoder()
        if handshake:
            assert self.feed(PREFACE + settings()) == []
            assert self.out() == [Frame(SETTINGS, ACK, 0, b"")]

    def headers(
        self, stream_id: int, fields: Fields = GET, *, end_stream: bool = True, flags: int = 0
    ) -> bytes:
        flags |= END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream_id, self.encoder.encode(fields))

    def feed(self, data: bytes) -> list[Event]:
        return self.codec.receive(data)

    def out(self) -> list[Frame]:
        return parse(self.codec.data_to_send())

    def open(self, stream_id: int, fields: Fields = GET, *, end_stream: bool = False) -> None:
        events = self.feed(self.headers(stream_id, fields, end_stream=end_stream))
        assert events == [RequestReceived(stream_id, fields, end_stream)]
        assert self.out() == []

    def fails(self, data: bytes, code: ErrorCode) -> int:
        """Feed `data`, which must end the connection with `code`; the GOAWAY's last id."""
        with pytest.raises(ProtocolFailure) as failure:
            self.feed(data)
        assert failure.value.code == code
        frames = self.out()
        assert frames, "no GOAWAY queued"
        last, sent = goaway(frames[-1])
        assert sent == code
        # The connection is over: nothing more is read or answered.
        assert self.feed(ping()) == []
        assert self.out() == []
        return last


# The happy path -----------------------------------------------------------------------------


def test_start_announces_settings_and_connection_window() -> None:
    peer = Peer(handshake=False, stream_window=70000, max_streams=7, header_list_limit=9999)
    (announce, update) = peer.opening
    assert announce.kind == SETTINGS
    assert announce.flags == 0
    assert announce.stream_id == 0
    pairs = dict(struct.iter_unpack(">HI", announce.payload))
    assert pairs == {
        MAX_CONCURRENT_STREAMS: 7,
        INITIAL_WINDOW_SIZE: 70000,
        MAX_HEADER_LIST_SIZE: 9999,
    }
    assert update == Frame(WINDOW_UPDATE, 0, 0, word(4 * 1024 * 1024 - 65535))
    # A connection window no larger than the default needs no WINDOW_UPDATE.
    assert [f.kind for f in Peer(handshake=False, connection_window=65535).opening] == [SETTINGS]


def test_get() -> None:
    peer = Peer(handshake=False)
    events = peer.feed(PREFACE + settings() + peer.headers(1))
    assert events == [RequestReceived(1, GET, True)]
    assert peer.out() == [Frame(SETTINGS, ACK, 0, b"")]
    assert peer.codec.highest == 1


def test_post_with_data_frames_and_padding() -> None:
    peer = Peer()
    peer.open(1, post(11))
    events = peer.feed(
        data(1, b"hello")
        + data(1, padded(b" wor", 6), PADDED)
        + data(1, padded(b"ld", 0), PADDED | END_STREAM)
    )
    assert events == [
        DataReceived(1, b"hello", 5, False),
        DataReceived(1, b" wor", 11, False),
        DataReceived(1, b"ld", 3, True),
    ]
    assert peer.out() == []


def test_data_frame_of_padding_only() -> None:
    peer = Peer()
    peer.open(1, post())
    assert peer.feed(data(1, padded(b"", 9), PADDED | END_STREAM)) == [
        DataReceived(1, b"", 10, True)
    ]


def test_trailers() -> None:
    peer = Peer()
    peer.open(1, post(3))
    events = peer.feed(data(1, b"abc") + peer.headers(1, TRAILERS))
    assert events == [DataReceived(1, b"abc", 3, False), TrailersReceived(1, TRAILERS)]
    assert peer.out() == []


def test_content_length_zero_with_end_stream() -> None:
    peer = Peer()
    peer.open(1, post(0), end_stream=True)


def test_header_block_in_continuation_frames() -> None:
    peer = Peer()
    fields = [*GET, (b"x-long", b"v" * 100)]
    block = peer.encoder.encode(fields)
    assert peer.feed(frame(HEADERS, END_STREAM, 1, block[:10])) == []
    assert peer.feed(frame(CONTINUATION, 0, 1, block[10:50])) == []
    events = peer.feed(frame(CONTINUATION, END_HEADERS, 1, block[50:]))
    assert events == [RequestReceived(1, fields, True)]


def test_headers_padded_with_priority() -> None:
    peer = Peer()
    block = peer.encoder.encode(GET)
    payload = bytes((4,)) + word(0x80000000 | 0) + b"\x10" + block + bytes(4)
    events = peer.feed(
        frame(HEADERS, END_HEADERS | END_STREAM | PADDED | PRIORITY_FLAG, 1, payload)
    )
    assert events == [RequestReceived(1, GET, True)]


def test_ping_settings_and_unknown_frames() -> None:
    peer = Peer()
    assert peer.feed(ping(b"abcdefgh")) == []
    assert peer.out() == [Frame(PING, ACK, 0, b"abcdefgh")]
    # A PING ACK, a SETTINGS ACK, an unknown setting and an unknown frame type need no answer.
    assert peer.feed(ping(b"abcdefgh", ACK) + frame(SETTINGS, ACK, 0)) == []
    assert peer.feed(frame(0x20, 0xFF, 0, b"what") + frame(0x21, 0, 9, b"")) == []
    assert peer.out() == []
    assert peer.feed(settings((0x99, 1), (ENABLE_PUSH, 0))) == []
    assert peer.out() == [Frame(SETTINGS, ACK, 0, b"")]
    # PRIORITY is legal on an idle stream, and changes nothing.
    assert peer.feed(frame(PRIORITY, 0, 7, word(1) + b"\x10")) == []
    assert peer.out() == []
    peer.open(9)


def test_reserved_bit_of_stream_id_is_ignored() -> None:
    peer = Peer()
    events = peer.feed(peer.headers(0x80000001))
    assert events == [RequestReceived(1, GET, True)]


def test_client_goaway_ends_connection() -> None:
    peer = Peer()
    peer.open(1)
    events = peer.feed(frame(GOAWAY, 0, 0, struct.pack(">II", 1, ErrorCode.NO_ERROR) + b"bye"))
    assert events == [ConnectionEnded(ErrorCode.NO_ERROR)]
    events = peer.feed(frame(GOAWAY, 0, 0, struct.pack(">II", 1, ErrorCode.ENHANCE_YOUR_CALM)))
    assert events == [ConnectionEnded(ErrorCode.ENHANCE_YOUR_CALM)]


# Input split anywhere -----------------------------------------------------------------------


def conversation() -> bytes:
    """A client's whole side of a connection, touching most frame types."""
    # Blocks encoded in the order they are sent: the encoder's table is shared.
    encoder = hpack.Encoder()
    first = encoder.encode(GET)
    request = encoder.encode([*post(11), (b"x-a", b"1" * 130)])
    trailers = encoder.encode(TRAILERS)
    second = encoder.encode(GET)
    return b"".join(
        [
            PREFACE,
            settings((INITIAL_WINDOW_SIZE, 100_000), (MAX_FRAME_SIZE, 20_000)),
            frame(HEADERS, END_HEADERS | END_STREAM, 1, first),
            frame(HEADERS, 0, 3, request[:5]),
            frame(CONTINUATION, 0, 3, request[5:9]),
            frame(CONTINUATION, END_HEADERS, 3, request[9:]),
            ping(),
            data(3, padded(b"hello", 4), PADDED),
            frame(0x20, 0, 0, b"unknown"),
            data(3, b" world"),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, trailers),
            window_update(0, 1000),
            window_update(3, 1000),
            frame(
                HEADERS,
                END_HEADERS | PADDED | PRIORITY_FLAG,
                5,
                bytes((3,)) + word(1) + b"\x20" + second + bytes(3),
            ),
            frame(PRIORITY, 0, 7, word(5) + b"\x00"),
            rst(5, ErrorCode.CANCEL),
            data(5, b"late"),
            frame(GOAWAY, 0, 0, struct.pack(">II", 0, ErrorCode.NO_ERROR)),
        ]
    )


def run(pieces: list[bytes | bytearray | memoryview]) -> tuple[list[Event], bytes]:
    codec = ServerConnection(**LIMITS)
    codec.start()
    codec.data_to_send()
    events: list[Event] = []
    for piece in pieces:
        events += codec.receive(piece)
    return events, codec.data_to_send()


def test_conversation_whole() -> None:
    events, out = run([conversation()])
    assert events == [
        WindowOpened(0),
        RequestReceived(1, GET, True),
        RequestReceived(3, [*post(11), (b"x-a", b"1" * 130)], False),
        DataReceived(3, b"hello", 10, False),
        DataReceived(3, b" world", 6, False),
        TrailersReceived(3, TRAILERS),
        WindowOpened(0),
        WindowOpened(3),
        RequestReceived(5, GET, False),
        StreamReset(5, ErrorCode.CANCEL, True),
        ConnectionEnded(ErrorCode.NO_ERROR),
    ]
    assert parse(out) == [Frame(SETTINGS, ACK, 0, b""), Frame(PING, ACK, 0, b"12345678")]


def test_conversation_one_byte_at_a_time() -> None:
    whole = conversation()
    expected = run([whole])
    assert run([whole[i : i + 1] for i in range(len(whole))]) == expected
    assert run([bytearray(whole[i : i + 1]) for i in range(len(whole))]) == expected
    view = memoryview(whole)
    assert run([view[i : i + 1] for i in range(len(whole))]) == expected


def test_conversation_split_in_two_anywhere() -> None:
    whole = conversation()
    expected = run([whole])
    for cut in range(len(whole) + 1):
        assert run([whole[:cut], whole[cut:]]) == expected, f"split at {cut}"


# Connection errors --------------------------------------------------------------------------

Build = Callable[[Peer], bytes]


def _open_then(stream_id: int, then: Build, fields: Fields = GET, *, ended: bool = False) -> Build:
    """Open a stream (its request ended or not), then the frames `then` builds."""

    def build(peer: Peer) -> bytes:
        peer.open(stream_id, fields, end_stream=ended)
        return then(peer)

    return build


def _oversized(peer: Peer) -> bytes:
    return peer.headers(1, [*GET, (b"x-big", b"v" * 300)])


def _oversized_in_continuation(peer: Peer) -> bytes:
    block = peer.encoder.encode([*GET, (b"x-big", b"v" * 300)])
    return frame(HEADERS, 0, 1, block[:20]) + frame(CONTINUATION, END_HEADERS, 1, block[20:])


CONNECTION_ERRORS = [
    pytest.param(
        lambda p: frame(HEADERS, END_HEADERS, 0, p.encoder.encode(GET)),
        ErrorCode.PROTOCOL_ERROR,
        id="HEADERS on stream 0",
    ),
    pytest.param(lambda p: data(0, b"x"), ErrorCode.PROTOCOL_ERROR, id="DATA on stream 0"),
    pytest.param(lambda p: data(1, b"x"), ErrorCode.PROTOCOL_ERROR, id="DATA on idle stream"),
    pytest.param(
        _open_then(1, lambda p: data(3, b"x")),
        ErrorCode.PROTOCOL_ERROR,
        id="DATA on idle stream above highest",
    ),
    pytest.param(
        _open_then(3, lambda p: data(2, b"x")),
        ErrorCode.PROTOCOL_ERROR,
        id="DATA on even stream",
    ),
    pytest.param(
        lambda p: window_update(1, 10), ErrorCode.PROTOCOL_ERROR, id="WINDOW_UPDATE on idle stream"
    ),
    pytest.param(
        lambda p: rst(1, ErrorCode.CANCEL), ErrorCode.PROTOCOL_ERROR, id="RST_STREAM on idle stream"
    ),
    pytest.param(
        lambda p: rst(0, ErrorCode.CANCEL), ErrorCode.PROTOCOL_ERROR, id="RST_STREAM on stream 0"
    ),
    pytest.param(
        _open_then(1, lambda p: frame(RST_STREAM, 0, 1, b"\0\0\0")),
        ErrorCode.FRAME_SIZE_ERROR,
        id="RST_STREAM of 3 bytes",
    ),
    pytest.param(lambda p: p.headers(2), ErrorCode.PROTOCOL_ERROR, id="HEADERS with even id"),
    pytest.param(
        _open_then(3, lambda p: p.headers(2)),
        ErrorCode.PROTOCOL_ERROR,
        id="HEADERS with even id below highest",
    ),
    pytest.param(
        lambda p: frame(HEADERS, 0, 1, p.encoder.encode(GET)) + ping(),
        ErrorCode.PROTOCOL_ERROR,
        id="PING inside header block",
    ),
    pytest.param(
        lambda p: frame(HEADERS, 0, 1, p.encoder.encode(GET)) + frame(0x20, 0, 0, b""),
        ErrorCode.PROTOCOL_ERROR,
        id="unknown frame inside header block",
    ),
    pytest.param(
        lambda p: frame(HEADERS, 0, 1, p.encoder.encode(GET)) + frame(CONTINUATION, 4, 3, b""),
        ErrorCode.PROTOCOL_ERROR,
        id="CONTINUATION of another stream",
    ),
    pytest.param(
        lambda p: frame(CONTINUATION, END_HEADERS, 1, p.encoder.encode(GET)),
        ErrorCode.PROTOCOL_ERROR,
        id="CONTINUATION without block",
    ),
    pytest.param(
        _open_then(1, lambda p: frame(PUSH_PROMISE, END_HEADERS, 1, word(2))),
        ErrorCode.PROTOCOL_ERROR,
        id="PUSH_PROMISE",
    ),
    pytest.param(
        lambda p: frame(SETTINGS, 0, 1, b""), ErrorCode.PROTOCOL_ERROR, id="SETTINGS on a stream"
    ),
    pytest.param(
        lambda p: frame(SETTINGS, 0, 0, b"\0\x04\0\0\0"),
        ErrorCode.FRAME_SIZE_ERROR,
        id="SETTINGS of 5 bytes",
    ),
    pytest.param(
        lambda p: frame(SETTINGS, 0, 0, bytes(12) + b"\0"),
        ErrorCode.FRAME_SIZE_ERROR,
        id="SETTINGS of 13 bytes",
    ),
    pytest.param(
        lambda p: frame(SETTINGS, ACK, 0, bytes(6)),
        ErrorCode.FRAME_SIZE_ERROR,
        id="SETTINGS ACK with payload",
    ),
    pytest.param(
        lambda p: settings((MAX_FRAME_SIZE, 16383)),
        ErrorCode.PROTOCOL_ERROR,
        id="MAX_FRAME_SIZE too small",
    ),
    pytest.param(
        lambda p: settings((MAX_FRAME_SIZE, 2**24)),
        ErrorCode.PROTOCOL_ERROR,
        id="MAX_FRAME_SIZE too large",
    ),
    pytest.param(
        lambda p: settings((ENABLE_PUSH, 2)), ErrorCode.PROTOCOL_ERROR, id="ENABLE_PUSH 2"
    ),
    pytest.param(
        lambda p: settings((INITIAL_WINDOW_SIZE, 2**31)),
        ErrorCode.FLOW_CONTROL_ERROR,
        id="INITIAL_WINDOW_SIZE 2^31",
    ),
    pytest.param(
        _open_then(
            1,
            lambda p: (
                window_update(1, LARGEST_WINDOW - 65535) + settings((INITIAL_WINDOW_SIZE, 65536))
            ),
        ),
        ErrorCode.FLOW_CONTROL_ERROR,
        id="INITIAL_WINDOW_SIZE overflows a stream window",
    ),
    pytest.param(lambda p: ping(b"1234567"), ErrorCode.FRAME_SIZE_ERROR, id="PING of 7 bytes"),
    pytest.param(lambda p: ping(b"123456789"), ErrorCode.FRAME_SIZE_ERROR, id="PING of 9 bytes"),
    pytest.param(
        lambda p: frame(PING, 0, 1, bytes(8)), ErrorCode.PROTOCOL_ERROR, id="PING on a stream"
    ),
    pytest.param(
        lambda p: window_update(0, 0), ErrorCode.PROTOCOL_ERROR, id="connection WINDOW_UPDATE 0"
    ),
    pytest.param(
        lambda p: window_update(0, LARGEST_WINDOW - 65535 + 1),
        ErrorCode.FLOW_CONTROL_ERROR,
        id="connection WINDOW_UPDATE overflow",
    ),
    pytest.param(
        lambda p: frame(WINDOW_UPDATE, 0, 0, bytes(3) + b"\x01\x00"),
        ErrorCode.FRAME_SIZE_ERROR,
        id="WINDOW_UPDATE of 5 bytes",
    ),
    pytest.param(
        _open_then(1, lambda p: b"".join(data(1, bytes(16384)) for _ in range(4)), post()),
        ErrorCode.FLOW_CONTROL_ERROR,
        id="DATA beyond connection window",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, bytes((3,)) + b"ab", PADDED), post()),
        ErrorCode.PROTOCOL_ERROR,
        id="DATA padding as long as the frame",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, b"", PADDED), post()),
        ErrorCode.PROTOCOL_ERROR,
        id="PADDED DATA without pad length",
    ),
    pytest.param(
        lambda p: frame(HEADERS, END_HEADERS | PADDED, 1, bytes((5,)) + p.encoder.encode(GET)[:4]),
        ErrorCode.PROTOCOL_ERROR,
        id="HEADERS padding longer than frame",
    ),
    pytest.param(
        lambda p: frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, b"\0\0\0"),
        ErrorCode.FRAME_SIZE_ERROR,
        id="HEADERS too short for priority",
    ),
    pytest.param(
        lambda p: frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xbe"),
        ErrorCode.COMPRESSION_ERROR,
        id="header block with a bad index",
    ),
    pytest.param(
        lambda p: frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x00\x05ab"),
        ErrorCode.COMPRESSION_ERROR,
        id="header block cut short",
    ),
    pytest.param(
        lambda p: frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\x3f\xe2\x1f"),
        ErrorCode.COMPRESSION_ERROR,
        id="table size update beyond the limit",
    ),
    pytest.param(
        lambda p: frame(PRIORITY, 0, 0, word(1) + b"\0"),
        ErrorCode.PROTOCOL_ERROR,
        id="PRIORITY on stream 0",
    ),
    pytest.param(
        lambda p: frame(GOAWAY, 0, 1, bytes(8)), ErrorCode.PROTOCOL_ERROR, id="GOAWAY on a stream"
    ),
    pytest.param(
        lambda p: frame(GOAWAY, 0, 0, bytes(7)), ErrorCode.FRAME_SIZE_ERROR, id="GOAWAY of 7 bytes"
    ),
]


@pytest.mark.parametrize(("build", "code"), CONNECTION_ERRORS)
def test_connection_error(build: Build, code: ErrorCode) -> None:
    peer = Peer(connection_window=65535)
    peer.fails(build(peer), code)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="HTTP/1.1"),
        pytest.param(b"PRI * HTTP/1.1", id="short and wrong"),
        pytest.param(PREFACE[:-1] + b"X" + settings(), id="last byte wrong"),
    ],
)
def test_bad_preface(data: bytes) -> None:
    peer = Peer(handshake=False)
    assert peer.fails(data, ErrorCode.PROTOCOL_ERROR) == 0


def test_preface_prefix_waits() -> None:
    peer = Peer(handshake=False)
    assert peer.feed(PREFACE[:10]) == []
    assert peer.feed(PREFACE[10:] + settings()) == []
    assert peer.out() == [Frame(SETTINGS, ACK, 0, b"")]


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(ping(), id="PING"),
        pytest.param(frame(SETTINGS, ACK, 0), id="SETTINGS ACK"),
        pytest.param(window_update(0, 5), id="WINDOW_UPDATE"),
        pytest.param(frame(0x20, 0, 0, b""), id="unknown"),
    ],
)
def test_first_frame_not_settings(first: bytes) -> None:
    peer = Peer(handshake=False)
    peer.fails(PREFACE + first, ErrorCode.PROTOCOL_ERROR)


def test_frame_longer_than_16384_fails_at_its_header() -> None:
    peer = Peer()
    peer.open(1, post())
    # Only the 9 bytes of the header: the codec need not wait for the payload.
    head = FRAME_HEAD.pack(16385 << 8 | DATA, 0, 1)
    assert peer.fails(head, ErrorCode.FRAME_SIZE_ERROR) == 1


def test_frame_of_16384_is_fine() -> None:
    peer = Peer()
    peer.open(1, post())
    assert peer.feed(data(1, bytes(16384))) == [DataReceived(1, bytes(16384), 16384, False)]


def test_oversized_header_list() -> None:
    peer = Peer(header_list_limit=200)
    peer.fails(_oversized(peer), ErrorCode.ENHANCE_YOUR_CALM)


def test_oversized_header_list_in_continuation() -> None:
    """The same header list as above, only framed differently: the same answer."""
    peer = Peer(header_list_limit=200)
    peer.fails(_oversized_in_continuation(peer), ErrorCode.ENHANCE_YOUR_CALM)


def test_goaway_names_the_highest_stream() -> None:
    peer = Peer()
    peer.open(1)
    peer.open(5, end_stream=True)
    assert peer.fails(ping(b"short"), ErrorCode.FRAME_SIZE_ERROR) == 5


# Stream errors ------------------------------------------------------------------------------


def _trailers_self_dependent(peer: Peer) -> bytes:
    peer.open(1, post())
    block = peer.encoder.encode(TRAILERS)
    return frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, word(1) + b"\0" + block)


def _headers_self_dependent(peer: Peer) -> bytes:
    block = peer.encoder.encode(GET)
    return frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 1, word(1) + b"\0" + block)


STREAM_ERRORS = [
    pytest.param(
        _open_then(1, lambda p: data(1, b"abcd", END_STREAM), post(3)),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="body longer than content-length",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, b"ab") + data(1, b"cd"), post(3)),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="body longer than content-length over two frames",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, b"abc", END_STREAM), post(5)),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="body shorter than content-length",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, b"abc") + p.headers(1, TRAILERS), post(5)),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="body shorter than content-length before trailers",
    ),
    pytest.param(
        lambda p: p.headers(1, post(5)),
        ErrorCode.PROTOCOL_ERROR,
        False,
        id="content-length with END_STREAM on HEADERS",
    ),
    pytest.param(
        lambda p: p.headers(1, [*post(None), (b"content-length", b"5x")], end_stream=False),
        ErrorCode.PROTOCOL_ERROR,
        False,
        id="content-length not a number",
    ),
    pytest.param(
        lambda p: p.headers(1, [*post(5), (b"content-length", b"6")], end_stream=False),
        ErrorCode.PROTOCOL_ERROR,
        False,
        id="two content-lengths that differ",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, b"x"), ended=True),
        ErrorCode.STREAM_CLOSED,
        True,
        id="DATA after END_STREAM",
    ),
    pytest.param(
        _open_then(1, lambda p: p.headers(1, TRAILERS), ended=True),
        ErrorCode.STREAM_CLOSED,
        True,
        id="HEADERS after END_STREAM",
    ),
    pytest.param(
        _open_then(1, lambda p: p.headers(1, TRAILERS, end_stream=False), post()),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="trailers without END_STREAM",
    ),
    pytest.param(
        _open_then(1, lambda p: data(1, bytes(101)), post()),
        ErrorCode.FLOW_CONTROL_ERROR,
        True,
        id="stream window overrun",
    ),
    pytest.param(
        _open_then(1, lambda p: window_update(1, 0)),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="stream WINDOW_UPDATE 0",
    ),
    pytest.param(
        _open_then(1, lambda p: window_update(1, LARGEST_WINDOW - 65535 + 1)),
        ErrorCode.FLOW_CONTROL_ERROR,
        True,
        id="stream WINDOW_UPDATE overflow",
    ),
    pytest.param(
        _open_then(1, lambda p: frame(PRIORITY, 0, 1, word(1) + b"\x10")),
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="PRIORITY self-dependency",
    ),
    pytest.param(
        _open_then(1, lambda p: frame(PRIORITY, 0, 1, word(3))),
        ErrorCode.FRAME_SIZE_ERROR,
        True,
        id="PRIORITY of 4 bytes",
    ),
    pytest.param(
        _headers_self_dependent,
        ErrorCode.PROTOCOL_ERROR,
        False,
        id="HEADERS self-dependency",
    ),
    pytest.param(
        _trailers_self_dependent,
        ErrorCode.PROTOCOL_ERROR,
        True,
        id="trailers self-dependency",
    ),
]


@pytest.mark.parametrize(("build", "code", "tracked"), STREAM_ERRORS)
def test_stream_error_keeps_connection(build: Build, code: ErrorCode, tracked: bool) -> None:
    peer = Peer(stream_window=100)
    events = peer.feed(build(peer))
    frames = peer.out()
    assert frames == [Frame(RST_STREAM, 0, 1, word(code))]
    if tracked:
        assert events[-1] == StreamReset(1, code, False)
    else:
        assert events == []
    assert not any(isinstance(event, StreamReset) for event in events[:-1])
    assert 1 not in peer.codec.streams
    with pytest.raises(StreamGone):
        peer.codec.send_headers(1, [(b":status", b"200")], end_stream=True)
    # The connection goes on: the HPACK state too.
    peer.open(3, GET, end_stream=True)
    assert peer.feed(data(1, b"late")) == []
    assert peer.out() == []


def test_stream_error_after_some_body_was_delivered() -> None:
    peer = Peer()
    peer.open(1, post(3))
    events = peer.feed(data(1, b"ab") + data(1, b"cd"))
    assert events == [
        DataReceived(1, b"ab", 2, False),
        StreamReset(1, ErrorCode.PROTOCOL_ERROR, False),
    ]


def test_refused_stream_past_limit() -> None:
    peer = Peer(stream_limit=2)
    peer.open(1, end_stream=True)
    peer.open(3, post())
    fields = [*GET, (b"x-custom", b"indexed in the client's table")]
    assert peer.feed(peer.headers(5, fields)) == []
    assert peer.out() == [Frame(RST_STREAM, 0, 5, word(ErrorCode.REFUSED_STREAM))]
    # Frames the client sent before it saw the reset are ignored.
    assert peer.feed(data(5, b"x") + window_update(5, 9)) == []
    assert peer.out() == []
    # A finished response frees a place; the refused block was decoded (the client's
    # encoder refers to its dynamic table entries now).
    peer.codec.send_headers(1, [(b":status", b"200")], end_stream=True)
    assert [f.kind for f in peer.out()] == [HEADERS]
    assert peer.feed(peer.headers(7, fields)) == [RequestReceived(7, fields, True)]


def test_client_reset() -> None:
    peer = Peer(connection_window=65535)
    peer.open(1, post())
    assert peer.feed(rst(1, ErrorCode.CANCEL)) == [StreamReset(1, ErrorCode.CANCEL, True)]
    assert 1 not in peer.codec.streams
    with pytest.raises(StreamGone):
        peer.codec.send_data(1, b"x", end_stream=False)
    # What was in flight is ignored, but its DATA still gives the connection window back.
    late = data(1, bytes(16384)) + window_update(1, 5) + rst(1, ErrorCode.CANCEL)
    late += frame(PRIORITY, 0, 1, word(1) + b"\0") + peer.headers(1, TRAILERS)
    assert peer.feed(late) == []
    assert peer.out() == []
    assert peer.feed(data(1, bytes(16384), END_STREAM)) == []
    assert peer.out() == [Frame(WINDOW_UPDATE, 0, 0, word(32768))]
    peer.open(3)


def test_server_reset() -> None:
    peer = Peer()
    peer.open(1, post())
    peer.codec.reset_stream(1, ErrorCode.CANCEL)
    assert peer.out() == [Frame(RST_STREAM, 0, 1, word(ErrorCode.CANCEL))]
    peer.codec.reset_stream(1, ErrorCode.CANCEL)
    assert peer.out() == []
    with pytest.raises(StreamGone):
        peer.codec.send_headers(1, [(b":status", b"200")], end_stream=False)
    assert peer.feed(data(1, b"late")) == []
    assert peer.out() == []


# Flow control -------------------------------------------------------------------------------


def test_stream_window_update_after_half_acknowledged() -> None:
    peer = Peer(stream_window=1000, connection_window=100_000)
    peer.open(1, post())
    assert peer.feed(data(1, bytes(300))) == [DataReceived(1, bytes(300), 300, False)]
    assert peer.out() == []
    peer.codec.acknowledge(1, 300)
    assert peer.out() == []
    assert peer.feed(data(1, padded(bytes(150), 149), PADDED)) == [
        DataReceived(1, bytes(150), 300, False)
    ]
    # Not before the app takes it.
    assert peer.out() == []
    peer.codec.acknowledge(1, 300)
    assert peer.out() == [Frame(WINDOW_UPDATE, 0, 1, word(600))]
    # The window given back can be used: 1000 - 600 + 600 in flight at most.
    assert peer.feed(data(1, bytes(1000)))[0] == DataReceived(1, bytes(1000), 1000, False)
    assert peer.out() == []
    # ... but not one byte more.
    assert peer.feed(data(1, b"x")) == [StreamReset(1, ErrorCode.FLOW_CONTROL_ERROR, False)]
    assert peer.out() == [Frame(RST_STREAM, 0, 1, word(ErrorCode.FLOW_CONTROL_ERROR))]


def test_connection_window_update_after_half_acknowledged() -> None:
    peer = Peer(connection_window=100_000)
    peer.open(1, post())
    peer.open(3, post())
    for stream_id in (1, 3, 1):
        assert peer.feed(data(stream_id, bytes(16384)))
        assert peer.out() == []
        peer.codec.acknowledge(stream_id, 16384)
        assert peer.out() == []
    assert peer.feed(data(3, bytes(1000)))
    assert peer.out() == []
    peer.codec.acknowledge(3, 1000)
    assert peer.out() == [Frame(WINDOW_UPDATE, 0, 0, word(3 * 16384 + 1000))]


def test_connection_window_without_acknowledge_is_exhausted() -> None:
    peer = Peer(connection_window=65535)
    peer.open(1, post())
    for _ in range(3):
        peer.feed(data(1, bytes(16384)))
    peer.feed(data(1, bytes(16383)))
    assert peer.out() == []
    peer.fails(data(1, b"x"), ErrorCode.FLOW_CONTROL_ERROR)


def test_no_stream_window_update_once_client_ended() -> None:
    peer = Peer(stream_window=1000, connection_window=100_000)
    peer.open(1, post())
    assert peer.feed(data(1, bytes(600), END_STREAM)) == [DataReceived(1, bytes(600), 600, True)]
    peer.codec.acknowledge(1, 600)
    assert peer.out() == []


def test_dropped_data_returns_connection_window() -> None:
    """DATA the codec resets a stream for is given back at once: the app never sees it."""
    peer = Peer(stream_window=10_000, connection_window=65535)
    frames: list[Frame] = []
    for stream_id in (1, 3, 5, 7):
        peer.open(stream_id, post())
        assert peer.feed(data(stream_id, bytes(10_001))) == [
            StreamReset(stream_id, ErrorCode.FLOW_CONTROL_ERROR, False)
        ]
        frames += peer.out()
    updates = [f for f in frames if f.kind == WINDOW_UPDATE]
    assert updates == [Frame(WINDOW_UPDATE, 0, 0, word(40_004))]


def test_window_tracks_client_settings_and_updates() -> None:
    peer = Peer()
    peer.open(1)
    codec = peer.codec
    assert codec.window(1) == 65535
    assert peer.feed(window_update(1, 100)) == [WindowOpened(1)]
    assert codec.window(1) == 65535
    assert peer.feed(window_update(0, 1000)) == [WindowOpened(0)]
    assert codec.window(1) == 65635
    assert peer.feed(settings((INITIAL_WINDOW_SIZE, 10))) == [WindowOpened(0)]
    assert peer.out() == [Frame(SETTINGS, ACK, 0, b"")]
    assert codec.window(1) == 110
    codec.send_data(1, b"x" * 110, end_stream=False)
    assert peer.out() == [Frame(DATA, 0, 1, b"x" * 110)]
    assert codec.window(1) == 0
    with pytest.raises(ValueError, match="window"):
        codec.send_data(1, b"x", end_stream=False)
    assert peer.feed(settings((INITIAL_WINDOW_SIZE, 0))) == [WindowOpened(0)]
    assert peer.out() == [Frame(SETTINGS, ACK, 0, b"")]
    assert codec.window(1) == -10
    assert peer.feed(window_update(1, 15)) == [WindowOpened(1)]
    assert codec.window(1) == 5
    # A new stream starts from the client's current initial window.
    peer.open(3)
    assert codec.window(3) == 0
    assert peer.feed(settings((INITIAL_WINDOW_SIZE, 70000))) == [WindowOpened(0)]
    # Now the connection window is the smaller: 65535 + 1000 - 110.
    assert codec.send_window == 66425
    assert codec.window(3) == codec.window(1) == 66425
    codec.send_data(3, bytes(16384), end_stream=False)
    assert codec.window(1) == 66425 - 16384


def test_send_data_bounded_by_frame_size() -> None:
    peer = Peer()
    peer.feed(settings((INITIAL_WINDOW_SIZE, 100_000)) + window_update(0, 100_000))
    peer.out()
    peer.open(1)
    assert peer.codec.max_frame_size == 16384
    with pytest.raises(ValueError, match="frame size"):
        peer.codec.send_data(1, bytes(16385), end_stream=False)
    assert peer.out() == []
    assert peer.feed(settings((MAX_FRAME_SIZE, 32768))) == []
    peer.out()
    assert peer.codec.max_frame_size == 32768
    peer.codec.send_data(1, bytes(16385), end_stream=True)
    assert peer.out() == [Frame(DATA, END_STREAM, 1, bytes(16385))]


def test_send_data_bounded_by_connection_window() -> None:
    peer = Peer()
    peer.feed(settings((INITIAL_WINDOW_SIZE, 100_000)))
    peer.out()
    peer.open(1)
    peer.open(3)
    for _ in range(3):
        peer.codec.send_data(1, bytes(16384), end_stream=False)
    peer.codec.send_data(3, bytes(16383), end_stream=False)
    assert peer.codec.window(1) == peer.codec.window(3) == 0
    with pytest.raises(ValueError, match="window"):
        peer.codec.send_data(3, b"x", end_stream=False)
    assert len(peer.out()) == 4


def test_sends_on_ended_stream_raise() -> None:
    peer = Peer()
    peer.open(1, post())
    codec = peer.codec
    codec.send_headers(1, [(b":status", b"200")], end_stream=False)
    codec.end_stream(1)
    assert [(f.kind, f.flags) for f in peer.out()] == [(HEADERS, END_HEADERS), (DATA, END_STREAM)]
    sends: list[Callable[[], object]] = [
        lambda: codec.send_data(1, b"x", end_stream=False),
        lambda: codec.send_headers(1, TRAILERS, end_stream=True),
        lambda: codec.end_stream(1),
        lambda: codec.window(1),
    ]
    for send in sends:
        with pytest.raises(StreamGone):
            send()
    # The client may still finish its body; then the stream is gone.
    assert peer.feed(data(1, b"abc", END_STREAM)) == [DataReceived(1, b"abc", 3, True)]
    assert 1 not in codec.streams
    with pytest.raises(StreamGone):
        codec.send_data(2, b"", end_stream=True)


def test_window_update_on_stream_the_server_ended() -> None:
    peer = Peer()
    peer.open(1, post())
    peer.codec.send_headers(1, [(b":status", b"200")], end_stream=True)
    peer.out()
    assert peer.feed(window_update(1, 10)) == [WindowOpened(1)]


# Ending the connection ----------------------------------------------------------------------


def test_close_sends_goaway_once_and_ignores_new_streams() -> None:
    peer = Peer()
    peer.open(1, post())
    peer.open(3, end_stream=True)
    peer.codec.close()
    frames = peer.out()
    assert len(frames) == 1
    assert goaway(frames[0]) == (3, ErrorCode.NO_ERROR)
    peer.codec.close()
    peer.codec.close(ErrorCode.INTERNAL_ERROR)
    assert peer.out() == []
    # New streams are ignored, with their frames; the open ones go on.
    assert peer.feed(peer.headers(5, post(), end_stream=False)) == []
    assert peer.feed(data(5, b"ignored") + window_update(5, 1)) == []
    assert peer.out() == []
    assert peer.feed(data(1, b"body", END_STREAM)) == [DataReceived(1, b"body", 4, True)]
    peer.codec.send_headers(3, [(b":status", b"204")], end_stream=True)
    assert [f.kind for f in peer.out()] == [HEADERS]


def test_close_with_code() -> None:
    peer = Peer()
    peer.codec.close(ErrorCode.ENHANCE_YOUR_CALM)
    assert [goaway(f) for f in peer.out()] == [(0, ErrorCode.ENHANCE_YOUR_CALM)]


def test_goaway_last_stream_id_never_grows() -> None:
    """RFC 9113 section 6.8: a later GOAWAY must not name a higher last stream id."""
    peer = Peer()
    peer.open(1)
    peer.codec.close()
    assert [goaway(f) for f in peer.out()] == [(1, ErrorCode.NO_ERROR)]
    assert peer.feed(peer.headers(3)) == []
    last = peer.fails(ping(b"short"), ErrorCode.FRAME_SIZE_ERROR)
    assert last <= 1


# HPACK encoding of responses ----------------------------------------------------------------

STATUSES = [b"200", b"204", b"206", b"304", b"400", b"404", b"500"]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([(b":status", status)], id=f"status {status.decode()}")
        for status in [*STATUSES, b"100", b"201", b"302", b"418", b"503"]
    ]
    + [
        pytest.param(
            [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-request-id", b"42")],
            id="static and literal names",
        ),
        pytest.param(
            [(b":status", b"200"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
            id="repeated name",
        ),
        pytest.param([(b":status", b"200"), (b"x-empty", b"")], id="empty value"),
        pytest.param([(b":status", b"200"), (b"x-" + b"n" * 200, b"v")], id="long name"),
    ]
    + [
        pytest.param([(b":status", b"404"), (b"x-long", b"v" * size)], id=f"value of {size}")
        for size in (126, 127, 128, 254, 255, 256, 16384 + 126, 70000)
    ],
)
def test_send_headers_round_trip(fields: Fields) -> None:
    peer = Peer()
    peer.feed(settings((MAX_FRAME_SIZE, 2**24 - 1)))
    peer.out()
    peer.open(1)
    peer.codec.send_headers(1, fields, end_stream=True)
    (headers,) = peer.out()
    assert (headers.kind, headers.flags, headers.stream_id) == (
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
    )
    assert decode(response_decoder(), headers.payload) == fields


@pytest.mark.parametrize("status", STATUSES)
def test_static_status_is_one_byte(status: bytes) -> None:
    block = encode_fields([(b":status", status)])
    assert len(block) == 1
    assert HeaderTable.STATIC_TABLE[(block[0] & 0x7F) - 1] == (b":status", status)


def test_every_static_name_round_trips_indexed() -> None:
    names = list(dict.fromkeys(name for name, _ in HeaderTable.STATIC_TABLE))
    assert len(names) == 52
    fields = [(name, b"#") for name in names]
    block = encode_fields(fields)
    # One decoder for all: nothing entered the dynamic table.
    decoder = response_decoder()
    assert decode(decoder, block) == fields
    assert decode(decoder, block) == fields
    assert len(decoder.header_table.dynamic_entries) == 0
    for name in names:
        single = encode_fields([(name, b"#")])
        assert name not in single
        assert single[0] & 0xF0 == 0, "a literal without indexing"


def test_literal_names_are_not_indexed() -> None:
    block = encode_fields([(b"x-custom", b"value")])
    assert block == b"\x00\x08x-custom\x05value"


def _block_of(size: int) -> Fields:
    """Response fields whose encoded block is exactly `size` bytes."""
    for length in range(size - 20, size):
        fields = [(b":status", b"200"), (b"x-big", b"v" * length)]
        if len(encode_fields(fields)) == size:
            return fields
    raise AssertionError(size)


@pytest.mark.parametrize(
    ("size", "frame_size", "pieces"),
    [
        (16384, 16384, [16384]),
        (16385, 16384, [16384, 1]),
        (40000, 16384, [16384, 16384, 7232]),
        (49152, 16384, [16384, 16384, 16384]),
        (40000, 20000, [20000, 20000]),
        (40000, 40000, [40000]),
    ],
)
@pytest.mark.parametrize("end_stream", [True, False])
def test_headers_split_into_continuation(
    size: int, frame_size: int, pieces: list[int], end_stream: bool
) -> None:
    peer = Peer()
    if frame_size != 16384:
        peer.feed(settings((MAX_FRAME_SIZE, frame_size)))
        peer.out()
    peer.open(1)
    fields = _block_of(size)
    peer.codec.send_headers(1, fields, end_stream=end_stream)
    frames = peer.out()
    assert [len(f.payload) for f in frames] == pieces
    assert [f.kind for f in frames] == [HEADERS] + [CONTINUATION] * (len(pieces) - 1)
    assert all(f.stream_id == 1 for f in frames)
    ended = END_STREAM if end_stream else 0
    flags = [f.flags for f in frames]
    if len(frames) == 1:
        assert flags == [ended | END_HEADERS]
    else:
        assert flags == [ended] + [0] * (len(frames) - 2) + [END_HEADERS]
    block = b"".join(f.payload for f in frames)
    assert decode(response_decoder(), block) == fields


def test_response_with_trailers() -> None:
    peer = Peer()
    peer.open(1, post(2))
    codec = peer.codec
    codec.send_headers(1, [(b":status", b"200"), (b"trailer", b"x-checksum")], end_stream=False)
    codec.send_data(1, b"body", end_stream=False)
    codec.send_headers(1, TRAILERS, end_stream=True)
    frames = peer.out()
    assert [(f.kind, f.flags) for f in frames] == [
        (HEADERS, END_HEADERS),
        (DATA, 0),
        (HEADERS, END_HEADERS | END_STREAM),
    ]
    decoder = response_decoder()
    assert decode(decoder, frames[0].payload)[1] == (b"trailer", b"x-checksum")
    assert decode(decoder, frames[2].payload) == TRAILERS
    # Still tracked: the client has not finished its body.
    assert peer.feed(data(1, b"ok", END_STREAM)) == [DataReceived(1, b"ok", 2, True)]
    assert codec.streams == {}


# The h2 library as the client ---------------------------------------------------------------


class Pair:
    """An h2 client and the codec, bytes shuttled both ways until both are quiet."""

    def __init__(self, *, acknowledge: bool = True, **limits: int) -> None:
        self.client = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.server = ServerConnection(**(LIMITS | limits))
        self.acknowledge = acknowledge
        self.server_events: list[Event] = []
        self.client_events: list[h2.events.Event] = []
        self.server.start()
        self.client.initiate_connection()
        self.pump()

    def pump(self) -> None:
        while True:
            outgoing = self.client.data_to_send()
            if outgoing:
                for event in self.server.receive(outgoing):
                    self.server_events.append(event)
                    if self.acknowledge and isinstance(event, DataReceived):
                        self.server.acknowledge(event.stream_id, event.flow_length)
            incoming = self.server.data_to_send()
            if incoming:
                for reply in self.client.receive_data(incoming):
                    self.client_events.append(reply)
                    if isinstance(reply, h2.events.DataReceived) and reply.stream_id:
                        size = reply.flow_controlled_length or 0
                        self.client.acknowledge_received_data(size, reply.stream_id)
            if not outgoing and not incoming:
                return

    def client_saw(self, kind: type[h2.events.Event]) -> list[h2.events.Event]:
        return [event for event in self.client_events if isinstance(event, kind)]

    def assert_clean(self) -> None:
        for kind in (h2.events.ConnectionTerminated, h2.events.StreamReset):
            assert self.client_saw(kind) == []
        assert not any(isinstance(event, StreamReset) for event in self.server_events)


def test_h2_get() -> None:
    pair = Pair()
    client, server = pair.client, pair.server
    request = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"a"),
        (b":path", b"/"),
    ]
    client.send_headers(1, request, end_stream=True)
    client.ping(b"pingpong")
    pair.pump()
    assert [e for e in pair.server_events if isinstance(e, RequestReceived)] == [
        RequestReceived(1, request, True)
    ]
    response = [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"x-served-by", b"codec"),
        (b"x-long", b"L" * 300),
    ]
    server.send_headers(1, response, end_stream=False)
    server.send_data(1, b"hello", end_stream=True)
    pair.pump()
    (head,) = pair.client_saw(h2.events.ResponseReceived)
    assert isinstance(head, h2.events.ResponseReceived)
    assert head.headers == response
    body = pair.client_saw(h2.events.DataReceived)
    assert b"".join(cast(h2.events.DataReceived, e).data or b"" for e in body) == b"hello"
    assert len(pair.client_saw(h2.events.StreamEnded)) == 1
    assert len(pair.client_saw(h2.events.PingAckReceived)) == 1
    assert server.streams == {}
    pair.assert_clean()
    server.close()
    pair.pump()
    (ended,) = pair.client_saw(h2.events.ConnectionTerminated)
    assert isinstance(ended, h2.events.ConnectionTerminated)
    assert (ended.error_code, ended.last_stream_id) == (0, 1)


def test_h2_post_larger_than_windows_with_trailers() -> None:
    pair = Pair(stream_window=20_000, connection_window=65535)
    client, server = pair.client, pair.server
    body = bytes(range(256)) * 800
    client.send_headers(1, post(len(body)), end_stream=False)
    pair.pump()
    sent = 0
    while sent < len(body):
        room = min(client.local_flow_control_window(1), client.max_outbound_frame_size)
        assert room > 0, "the client got no window back"
        chunk = body[sent : sent + room]
        sent += len(chunk)
        client.send_data(1, chunk, end_stream=sent == len(body))
        pair.pump()
    received = [e for e in pair.server_events if isinstance(e, DataReceived)]
    assert b"".join(e.data for e in received) == body
    assert received[-1].ended
    assert sum(1 for e in received if e.ended) == 1
    # The response: a body larger than the client's windows, then trailers.
    response = [(b":status", b"201"), (b"trailer", b"x-checksum")]
    server.send_headers(1, response, end_stream=False)
    payload = bytes(range(251)) * 600
    sent = 0
    while sent < len(payload):
        room = min(server.window(1), server.max_frame_size)
        assert room > 0, "the server got no window back"
        chunk = payload[sent : sent + room]
        sent += len(chunk)
        server.send_data(1, chunk, end_stream=False)
        pair.pump()
    server.send_headers(1, TRAILERS, end_stream=True)
    pair.pump()
    assert any(isinstance(e, WindowOpened) for e in pair.server_events)
    (head,) = pair.client_saw(h2.events.ResponseReceived)
    assert cast(h2.events.ResponseReceived, head).headers == response
    got = pair.client_saw(h2.events.DataReceived)
    assert b"".join(cast(h2.events.DataReceived, e).data or b"" for e in got) == payload
    (trailers,) = pair.client_saw(h2.events.TrailersReceived)
    assert cast(h2.events.TrailersReceived, trailers).headers == TRAILERS
    assert len(pair.client_saw(h2.events.StreamEnded)) == 1
    assert server.streams == {}
    pair.assert_clean()


def test_h2_concurrent_streams() -> None:
    pair = Pair()
    client, server = pair.client, pair.server
    for stream_id in (1, 3, 5):
        client.send_headers(stream_id, post(), end_stream=False)
    for stream_id in (5, 3, 1):
        client.send_data(stream_id, b"s%d" % stream_id, end_stream=True)
    pair.pump()
    for stream_id in (3, 1, 5):
        server.send_headers(stream_id, [(b":status", b"200")], end_stream=False)
        server.send_data(stream_id, b"r%d" % stream_id, end_stream=True)
    pair.pump()
    bodies = {
        e.stream_id: e.data
        for e in pair.client_saw(h2.events.DataReceived)
        if isinstance(e, h2.events.DataReceived)
    }
    assert bodies == {1: b"r1", 3: b"r3", 5: b"r5"}
    requests = {e.stream_id: e.data for e in pair.server_events if isinstance(e, DataReceived)}
    assert requests == {1: b"s1", 3: b"s3", 5: b"s5"}
    pair.assert_clean()


def test_h2_client_that_shrinks_header_table() -> None:
    """RFC 7541 section 4.2: once the client's SETTINGS_HEADER_TABLE_SIZE is below the
    encoder's table size, the next header block must start with a table size update."""
    pair = Pair()
    client, server = pair.client, pair.server
    client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
    client.send_headers(1, GET, end_stream=True)
    pair.pump()
    server.send_headers(1, [(b":status", b"200")], end_stream=True)
    pair.pump()
    assert len(pair.client_saw(h2.events.ResponseReceived)) == 1
    pair.assert_clean()
