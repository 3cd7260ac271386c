"""The server side of an HTTP/2 connection (RFC 9113) as a state machine without I/O: bytes in,
events out; answers in, bytes out.

Owns framing, stream states, flow control both ways, settings, PING and GOAWAY; header blocks
are decoded and encoded by transport.h2hpack. It took the place of the h2 library in the
emulator's own server (transport.h2), whose state machine was about 40 % of the server's CPU
for a small request; the server's own bounds (FrameMeter, stream limits, window waits) stay in
transport.h2 and transport.h2meter.

Where the RFC leaves a choice, the codec's (stable, and documented in docs/operations.md):

- A malformed request resets only its stream: a body longer or shorter than its
  content-length, or trailers without END_STREAM (PROTOCOL_ERROR); DATA or HEADERS after the
  client ended the stream (STREAM_CLOSED); a stream window overrun (FLOW_CONTROL_ERROR).
- Frames on a stream that has closed are ignored; their DATA still counts against, and is
  given back to, the connection window.
- Window is given back (WINDOW_UPDATE) once half of a window has been taken by the app, per
  stream and for the connection, as the h2 library did; never before the app takes it.
- Past `stream_limit` streams open at once, a new stream gets REFUSED_STREAM.
- After the server's GOAWAY, new streams are ignored; a later GOAWAY names the same last stream.
- Responses index nothing, so a client's SETTINGS_HEADER_TABLE_SIZE only matters when it
  shrinks: the next response head begins with a table size update, as decoders expect.
"""

from __future__ import annotations

import struct
from typing import NoReturn

import attrs

from . import h2hpack
from .h2hpack import Fields
from .h2wire import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    LARGEST_FRAME_SIZE,
    LARGEST_WINDOW,
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
    WORD,
    ErrorCode,
)

_SETTING = struct.Struct(">HI")
_GOAWAY = struct.Struct(">II")


class ProtocolFailure(Exception):
    """The client broke the protocol: GOAWAY with `code` is queued and the connection ends."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class StreamGone(Exception):
    """A send on a stream the server can no longer send on (reset, or already ended)."""


# Events -------------------------------------------------------------------------------------


@attrs.define
class RequestReceived:
    stream_id: int
    headers: Fields
    # The request has no body (END_STREAM on its head).
    ended: bool


@attrs.define
class DataReceived:
    stream_id: int
    data: bytes
    # What it took of the windows (padding included): give it back with `acknowledge`.
    flow_length: int
    # The last of the body.
    ended: bool


@attrs.define
class TrailersReceived:
    """Request trailers; they end the stream."""

    stream_id: int
    headers: Fields


@attrs.define
class StreamReset:
    """The client reset the stream (`remote`), or the codec did for a stream error."""

    stream_id: int
    code: int
    remote: bool


@attrs.define
class WindowOpened:
    """The client gave window: for one stream, or for all (`stream_id` 0)."""

    stream_id: int


@attrs.define
class ConnectionEnded:
    """The client sent GOAWAY."""

    code: int


Event = (
    RequestReceived | DataReceived | TrailersReceived | StreamReset | WindowOpened | ConnectionEnded
)


class _Stream:
    """A stream the codec still tracks: one side at least is open."""

    __slots__ = (
        "length_left",
        "local_open",
        "receive_window",
        "remote_open",
        "send_window",
        "unacked",
    )

    def __init__(self, send_window: int, receive_window: int, remote_open: bool) -> None:
        # The client may still send (no END_STREAM yet); the server may still send.
        self.remote_open = remote_open
        self.local_open = True
        self.send_window = send_window
        # What the client may still send before the server gives window back.
        self.receive_window = receive_window
        # Taken by the app, not yet given back.
        self.unacked = 0
        # Body bytes the request's content-length still promises (-1: none declared).
        self.length_left = -1


class ServerConnection:
    """One connection's protocol state. `start()` first; then `receive()` each read, and
    `data_to_send()` after any call."""

    def __init__(
        self,
        *,
        stream_window: int,
        connection_window: int,
        max_streams: int,
        stream_limit: int,
        header_list_limit: int,
    ) -> None:
        self._stream_window = stream_window
        self._connection_window = connection_window
        self._max_streams = max_streams
        self._stream_limit = stream_limit
        self._header_list_limit = header_list_limit
        self._decoder = h2hpack.Decoder(max_list_size=header_list_limit)
        self._out = bytearray()
        self._events: list[Event] = []
        # Bytes of a frame (or of the preface) not yet complete.
        self._pending = b""
        self._preface = True
        self._settled = False
        self._failed = False
        self._goaway_sent = False
        self._last_stream = 0
        # A dynamic table size update the next response head must begin with (RFC 7541
        # section 4.2): the client lowered SETTINGS_HEADER_TABLE_SIZE.
        self._table_update = b""
        self._encoder_table_size = h2hpack.DEFAULT_TABLE_SIZE
        self.streams: dict[int, _Stream] = {}
        # The highest stream id the client has opened.
        self.highest = 0
        # The server's side of flow control: what it may send, and the client's frame size.
        self.send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self.max_frame_size = DEFAULT_FRAME_SIZE
        # The client's side: what it may still send on the connection, and what the app took.
        self._receive_window = DEFAULT_WINDOW
        self._unacked = 0
        # A header block waiting for its CONTINUATION frames.
        self._block: bytearray | None = None
        self._block_stream = 0
        self._block_flags = 0
        self._block_bad = False

    def start(self) -> None:
        """Queue the server's SETTINGS and the connection window beyond the default."""
        settings = (
            _SETTING.pack(MAX_CONCURRENT_STREAMS, self._max_streams)
            + _SETTING.pack(INITIAL_WINDOW_SIZE, self._stream_window)
            + _SETTING.pack(MAX_HEADER_LIST_SIZE, self._header_list_limit)
        )
        self._frame(SETTINGS, 0, 0, settings)
        if self._connection_window > DEFAULT_WINDOW:
            increment = self._connection_window - DEFAULT_WINDOW
            self._frame(WINDOW_UPDATE, 0, 0, WORD.pack(increment))
            self._receive_window = self._connection_window

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

    # Receiving -----------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """The events in `data` (frames may be split anywhere). Raises `ProtocolFailure`."""
        if self._failed:
            return []
        if self._pending:
            data = self._pending + bytes(data)
            self._pending = b""
        elif type(data) is not bytes:
            data = bytes(data)
        events = self._events = []
        position = 0
        end = len(data)
        if self._preface:
            if end < len(PREFACE):
                if not PREFACE.startswith(data):
                    self._fail(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._pending = data
                return events
            if not data.startswith(PREFACE):
                self._fail(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface = False
            position = len(PREFACE)
        unpack = FRAME_HEAD.unpack_from
        while end - position >= 9:
            head, flags, stream_id = unpack(data, position)
            length = head >> 8
            if length > DEFAULT_FRAME_SIZE:
                self._fail(ErrorCode.FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            stop = position + 9 + length
            if stop > end:
                break
            kind = head & 0xFF
            stream_id &= 0x7FFFFFFF
            payload = data[position + 9 : stop]
            position = stop
            if self._block is not None and kind != CONTINUATION:
                self._fail(ErrorCode.PROTOCOL_ERROR, "a frame inside a header block")
            if not self._settled and (kind != SETTINGS or flags & ACK):
                self._fail(ErrorCode.PROTOCOL_ERROR, "the first frame is not SETTINGS")
            if kind == DATA:
                self._on_data(flags, stream_id, payload)
            elif kind == HEADERS:
                self._on_headers(flags, stream_id, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == RST_STREAM:
                self._on_reset(stream_id, payload)
            elif kind == SETTINGS:
                self._on_settings(flags, stream_id, payload)
            elif kind == PING:
                self._on_ping(flags, stream_id, payload)
            elif kind == CONTINUATION:
                self._on_continuation(flags, stream_id, payload)
            elif kind == PRIORITY:
                self._on_priority(stream_id, payload)
            elif kind == GOAWAY:
                self._on_goaway(stream_id, payload)
            elif kind == PUSH_PROMISE:
                self._fail(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # Frames of unknown types are ignored (RFC 9113 section 4.1).
        if position < end:
            self._pending = data[position:end]
        return events

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        if size > self._receive_window:
            self._fail(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._receive_window -= size
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            self._idle_check(stream_id, "DATA")
            self._give_back(size)
            if stream is not None:
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED)
            return
        if size > stream.receive_window:
            self._give_back(size)
            self._stream_error(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
            return
        stream.receive_window -= size
        data = payload
        if flags & PADDED:
            if not size or payload[0] >= size:
                self._fail(ErrorCode.PROTOCOL_ERROR, "padding longer than its frame")
            data = payload[1 : size - payload[0]]
        ended = bool(flags & END_STREAM)
        if stream.length_left >= 0:
            stream.length_left -= len(data)
            if stream.length_left < 0 or (ended and stream.length_left):
                self._give_back(size)
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
                return
        self._events.append(DataReceived(stream_id, data, size, ended))
        if ended:
            self._remote_end(stream_id, stream)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = payload
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                self._fail(ErrorCode.PROTOCOL_ERROR, "padding longer than its frame")
            fragment = payload[1 : len(payload) - payload[0]]
        bad = False
        if flags & PRIORITY_FLAG:
            if len(fragment) < 5:
                self._fail(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            bad = WORD.unpack_from(fragment)[0] & 0x7FFFFFFF == stream_id
            fragment = fragment[5:]
        if flags & END_HEADERS:
            self._headers_done(stream_id, flags, fragment, bad)
        else:
            self._block = bytearray(fragment)
            self._block_stream = stream_id
            self._block_flags = flags
            self._block_bad = bad

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self._block
        if block is None or stream_id != self._block_stream:
            self._fail(ErrorCode.PROTOCOL_ERROR, "CONTINUATION outside a header block")
            return
        block += payload
        if len(block) > self._header_list_limit:
            self._fail(ErrorCode.ENHANCE_YOUR_CALM, "a header block too large")
        if flags & END_HEADERS:
            self._block = None
            self._headers_done(stream_id, self._block_flags, bytes(block), self._block_bad)

    def _headers_done(self, stream_id: int, flags: int, block: bytes, bad: bool) -> None:
        # Decoded even when the stream is refused: the HPACK table must stay in step.
        try:
            fields = self._decoder.decode(block)
        except h2hpack.HeaderListTooLarge as error:
            self._fail(ErrorCode.ENHANCE_YOUR_CALM, str(error))
        except h2hpack.HeaderBlockError as error:
            self._fail(ErrorCode.COMPRESSION_ERROR, f"undecodable header block: {error}")
        ended = bool(flags & END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is not None:
            if not stream.remote_open:
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED)
            elif not ended or stream.length_left > 0 or bad:
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
            else:
                self._events.append(TrailersReceived(stream_id, fields))
                self._remote_end(stream_id, stream)
            return
        if not stream_id & 1:
            self._fail(ErrorCode.PROTOCOL_ERROR, "a client stream with an even id")
        if stream_id <= self.highest:
            return
        self.highest = stream_id
        if self._goaway_sent:
            return
        if bad:
            self._reset_frame(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        if len(self.streams) >= self._stream_limit:
            self._reset_frame(stream_id, ErrorCode.REFUSED_STREAM)
            return
        stream = _Stream(self._peer_initial_window, self._stream_window, not ended)
        for name, value in fields:
            if name == b"content-length":
                if not value.isdigit() or (
                    stream.length_left >= 0 and int(value) != stream.length_left
                ):
                    self._reset_frame(stream_id, ErrorCode.PROTOCOL_ERROR)
                    return
                stream.length_left = int(value)
        if ended and stream.length_left > 0:
            self._reset_frame(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        self.streams[stream_id] = stream
        self._events.append(RequestReceived(stream_id, fields, ended))

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE of a wrong size")
        increment = WORD.unpack(payload)[0] & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                self._fail(ErrorCode.PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > LARGEST_WINDOW:
                self._fail(ErrorCode.FLOW_CONTROL_ERROR, "the connection window overflowed")
            self._events.append(WindowOpened(0))
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            self._idle_check(stream_id, "WINDOW_UPDATE")
            return
        if not increment:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        stream.send_window += increment
        if stream.send_window > LARGEST_WINDOW:
            self._stream_error(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
            return
        self._events.append(WindowOpened(stream_id))

    def _on_reset(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM of a wrong size")
        if not stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if self.streams.pop(stream_id, None) is None:
            self._idle_check(stream_id, "RST_STREAM")
            return
        self._events.append(StreamReset(stream_id, WORD.unpack(payload)[0], True))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                self._fail(ErrorCode.FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with data")
            return
        if len(payload) % 6:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS of a wrong size")
        opened = False
        for offset in range(0, len(payload), 6):
            setting, value = _SETTING.unpack_from(payload, offset)
            if setting == INITIAL_WINDOW_SIZE:
                if value > LARGEST_WINDOW:
                    self._fail(ErrorCode.FLOW_CONTROL_ERROR, "an initial window too large")
                change = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += change
                    if stream.send_window > LARGEST_WINDOW:
                        self._fail(ErrorCode.FLOW_CONTROL_ERROR, "a stream window overflowed")
                opened = True
            elif setting == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                    self._fail(ErrorCode.PROTOCOL_ERROR, "an illegal frame size")
                self.max_frame_size = value
            elif setting == HEADER_TABLE_SIZE:
                # The encoder indexes nothing, but a decoder may still expect to hear that
                # the table it allows shrank.
                if value < self._encoder_table_size:
                    self._encoder_table_size = value
                    self._table_update = h2hpack.table_size_update(value)
            elif setting == ENABLE_PUSH and value > 1:
                self._fail(ErrorCode.PROTOCOL_ERROR, "an illegal ENABLE_PUSH")
            # Other settings are advisory for a server (or unknown, and ignored).
        self._settled = True
        self._frame(SETTINGS, ACK, 0)
        if opened:
            self._events.append(WindowOpened(0))

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if len(payload) != 8:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "PING of a wrong size")
        if stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if not flags & ACK:
            self._frame(PING, ACK, 0, payload)

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if stream_id not in self.streams:
            # Legal on an idle or closed stream, and nothing to reset there.
            return
        if len(payload) != 5:
            self._stream_error(stream_id, ErrorCode.FRAME_SIZE_ERROR)
        elif WORD.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR)
        # Otherwise ignored: the server does not schedule by priority (RFC 9113 section 5.3).

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id:
            self._fail(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            self._fail(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY too short")
        self._events.append(ConnectionEnded(_GOAWAY.unpack_from(payload)[1]))

    def _idle_check(self, stream_id: int, kind: str) -> None:
        """A frame for a stream the codec does not track: an error if the stream was never
        opened (idle), else ignored (the stream has closed)."""
        if stream_id > self.highest or not stream_id & 1:
            self._fail(ErrorCode.PROTOCOL_ERROR, f"{kind} on an idle stream")

    def _remote_end(self, stream_id: int, stream: _Stream) -> None:
        stream.remote_open = False
        if not stream.local_open:
            del self.streams[stream_id]

    def _stream_error(self, stream_id: int, code: ErrorCode) -> None:
        """Reset one stream the client got wrong; the connection goes on."""
        self._reset_frame(stream_id, code)
        if self.streams.pop(stream_id, None) is not None:
            self._events.append(StreamReset(stream_id, code, False))

    def _fail(self, code: ErrorCode, reason: str) -> NoReturn:
        self._failed = True
        self._goaway(code)
        raise ProtocolFailure(code, reason)

    # Answering -----------------------------------------------------------------------------

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The app took `size` flow-controlled bytes of a stream: give window back once half a
        window is taken."""
        self._give_back(size)
        stream = self.streams.get(stream_id)
        if stream is not None and stream.remote_open:
            stream.unacked += size
            if stream.unacked >= self._stream_window // 2:
                self._frame(WINDOW_UPDATE, 0, stream_id, WORD.pack(stream.unacked))
                stream.receive_window += stream.unacked
                stream.unacked = 0

    def _give_back(self, size: int) -> None:
        self._unacked += size
        if self._unacked >= self._connection_window // 2:
            self._frame(WINDOW_UPDATE, 0, 0, WORD.pack(self._unacked))
            self._receive_window += self._unacked
            self._unacked = 0

    def window(self, stream_id: int) -> int:
        """How many bytes the server may send on the stream now."""
        stream = self._sending(stream_id)
        return min(stream.send_window, self.send_window)

    def send_headers(self, stream_id: int, fields: Fields, *, end_stream: bool) -> None:
        stream = self._sending(stream_id)
        block = h2hpack.encode(fields)
        if self._table_update:
            block = self._table_update + block
            self._table_update = b""
        limit = self.max_frame_size
        flags = END_STREAM if end_stream else 0
        if len(block) <= limit:
            self._frame(HEADERS, flags | END_HEADERS, stream_id, block)
        else:
            self._frame(HEADERS, flags, stream_id, block[:limit])
            for start in range(limit, len(block), limit):
                last = start + limit >= len(block)
                piece = block[start : start + limit]
                self._frame(CONTINUATION, END_HEADERS if last else 0, stream_id, piece)
        if end_stream:
            self._local_end(stream_id, stream)

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        """Send `data` (within `window()` and `max_frame_size`) in one DATA frame."""
        stream = self._sending(stream_id)
        size = len(data)
        if size > self.max_frame_size or size > min(stream.send_window, self.send_window):
            raise ValueError(f"{size} bytes do not fit the window or the frame size")
        self.send_window -= size
        stream.send_window -= size
        self._frame(DATA, END_STREAM if end_stream else 0, stream_id, data)
        if end_stream:
            self._local_end(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, code: ErrorCode) -> None:
        """End a stream the server tracks with RST_STREAM (nothing for one already closed)."""
        if self.streams.pop(stream_id, None) is not None:
            self._reset_frame(stream_id, code)

    def close(self, code: ErrorCode = ErrorCode.NO_ERROR) -> None:
        """GOAWAY: streams opened after it are ignored."""
        if not self._goaway_sent:
            self._goaway(code)

    def _sending(self, stream_id: int) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamGone(stream_id)
        return stream

    def _local_end(self, stream_id: int, stream: _Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            del self.streams[stream_id]

    def _reset_frame(self, stream_id: int, code: ErrorCode) -> None:
        self._frame(RST_STREAM, 0, stream_id, WORD.pack(code))

    def _goaway(self, code: ErrorCode) -> None:
        # A later GOAWAY never names a higher last stream than the first (RFC 9113 section 6.8).
        if not self._goaway_sent:
            self._goaway_sent = True
            self._last_stream = self.highest
        self._frame(GOAWAY, 0, 0, _GOAWAY.pack(self._last_stream, code))

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self._out += FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream_id)
        self._out += payload
