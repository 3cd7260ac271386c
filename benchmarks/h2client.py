"""A small HTTP/2 cleartext (h2c, prior knowledge) client on trio, framing by hand.

Owns one multiplexed connection: many concurrent requests as streams, a reader task that
routes frames to their stream, flow control both ways (the server's windows for request
bodies, window given back for response bodies), SETTINGS and PING acknowledgements, and
serialised writes (frames leave in the order they were made, so stream ids stay increasing).
Response header blocks are decoded with the hpack library; request headers go out as HPACK
literals without indexing or Huffman coding, which needs no state.

The h2 library's state machine, which this replaced, cost the load generator about three times
the CPU a job of the hand-written HTTP/1.1 client (`h1.py`); with many runtimes on one shared
connection that cost sat on every job's path, so the h2c figure measured the client as much as
the emulator. Imports trio, hpack and the standard library.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Sequence

import hpack
import trio

from emulator.transport.h2hpack import encode_integer
from emulator.transport.h2wire import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_FRAME_SIZE,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    frame,
)
from emulator.transport.h2wire import WORD as _HEAD

# The receive window granted per stream and for the connection; given back at half used.
WINDOW = 2**24
CONNECTION_WINDOW = 2**30


class H2Error(Exception):
    """A stream was reset or the connection ended before the response was complete."""


class H2Response:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class _Stream:
    __slots__ = ("body", "done", "error", "send_window", "status", "unacknowledged")

    def __init__(self, send_window: int) -> None:
        self.status = 0
        self.body: list[bytes] = []
        self.done = trio.Event()
        self.error: str | None = None
        self.send_window = send_window
        self.unacknowledged = 0


def encode_fields(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Literal header fields without indexing, new names, no Huffman (RFC 7541 section 6.2.2)."""
    out = bytearray()
    for name, value in fields:
        out += b"\x00" + encode_integer(len(name), 7) + name + encode_integer(len(value), 7) + value
    return bytes(out)


class H2Connection:
    """Open with `await H2Connection.open(nursery, host, port)`; close with `close()`."""

    def __init__(self, sock: trio.socket.SocketType, authority: str) -> None:
        self.sock = sock
        self.authority = authority.encode()
        self.decoder = hpack.Decoder()
        self.streams: dict[int, _Stream] = {}
        self.next_id = 1
        self.out = bytearray()
        self.write_lock = trio.Lock()
        self.closed: str | None = None
        self.max_frame = 16384
        self.initial_send_window = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW
        self.window_opened = trio.Event()
        self.unacknowledged = 0

    @classmethod
    async def open(cls, nursery: trio.Nursery, host: str, port: int) -> H2Connection:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await sock.connect((host, port))
        self = cls(sock, f"{host}:{port}")
        settings = struct.pack(">HIHI", ENABLE_PUSH, 0, INITIAL_WINDOW_SIZE, WINDOW)
        self.out += PREFACE + frame(SETTINGS, 0, 0, settings)
        self.out += frame(WINDOW_UPDATE, 0, 0, _HEAD.pack(CONNECTION_WINDOW - DEFAULT_WINDOW))
        await self._flush()
        nursery.start_soon(self._read_loop)
        return self

    def close(self) -> None:
        self.closed = self.closed or "closed by the client"
        self.sock.close()

    async def _flush(self) -> None:
        async with self.write_lock:
            if not self.out:
                return
            view = memoryview(bytes(self.out))
            self.out.clear()
            while view:
                sent = await self.sock.send(view)
                view = view[sent:]

    # Reading ---------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        buffer = bytearray()
        block = bytearray()  # a header block waiting for its CONTINUATION frames
        block_flags = 0
        try:
            while True:
                data = await self.sock.recv(256 * 1024)
                if not data:
                    raise H2Error("connection closed by the server")
                buffer += data
                start = 0
                while len(buffer) - start >= 9:
                    head = _HEAD.unpack_from(buffer, start)[0]
                    length, kind = head >> 8, head & 0xFF
                    end = start + 9 + length
                    if end > len(buffer):
                        break
                    flags = buffer[start + 4]
                    stream_id = _HEAD.unpack_from(buffer, start + 5)[0] & 0x7FFFFFFF
                    payload = bytes(buffer[start + 9 : end])
                    start = end
                    if kind in (HEADERS, CONTINUATION):
                        if kind == HEADERS:
                            block = bytearray(_strip(payload, flags, kind))
                            block_flags = flags
                        else:
                            block += payload
                        if flags & END_HEADERS:
                            self._headers(stream_id, bytes(block), block_flags)
                    else:
                        self._frame(kind, flags, stream_id, payload)
                del buffer[:start]
                await self._flush()
        except (OSError, trio.ClosedResourceError, H2Error, hpack.HPACKError) as error:
            self._fail_all(f"{type(error).__name__}: {error}")

    def _headers(self, stream_id: int, block: bytes, flags: int) -> None:
        fields = self.decoder.decode(block, raw=True)
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if not stream.status:
            for name, value in fields:
                if name == b":status" and not value.startswith(b"1"):
                    stream.status = int(value)
        if flags & END_STREAM:
            self._end(stream_id)

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self._data(stream_id, flags, payload)
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                code = _HEAD.unpack_from(payload)[0]
                stream.error = f"stream reset by the server (error code {code})"
                stream.done.set()
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
            self.out += frame(SETTINGS, ACK, 0)
        elif kind == PING and not flags & ACK:
            self.out += frame(PING, ACK, 0, payload)
        elif kind == WINDOW_UPDATE:
            increment = _HEAD.unpack_from(payload)[0] & 0x7FFFFFFF
            if stream_id == 0:
                self.send_window += increment
            elif (stream := self.streams.get(stream_id)) is not None:
                stream.send_window += increment
            self._wake_senders()
        elif kind == GOAWAY:
            code = _HEAD.unpack_from(payload, 4)[0]
            raise H2Error(f"server sent GOAWAY (error code {code})")

    def _data(self, stream_id: int, flags: int, payload: bytes) -> None:
        size = len(payload)
        self.unacknowledged += size
        if self.unacknowledged >= CONNECTION_WINDOW // 2:
            self.out += frame(WINDOW_UPDATE, 0, 0, _HEAD.pack(self.unacknowledged))
            self.unacknowledged = 0
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        body = _strip(payload, flags, DATA)
        if body:
            stream.body.append(body)
        stream.unacknowledged += size
        if stream.unacknowledged >= WINDOW // 2 and not flags & END_STREAM:
            self.out += frame(WINDOW_UPDATE, 0, stream_id, _HEAD.pack(stream.unacknowledged))
            stream.unacknowledged = 0
        if flags & END_STREAM:
            self._end(stream_id)

    def _settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            code, value = struct.unpack_from(">HI", payload, offset)
            if code == INITIAL_WINDOW_SIZE:
                change = value - self.initial_send_window
                self.initial_send_window = value
                for stream in self.streams.values():
                    stream.send_window += change
                self._wake_senders()
            elif code == MAX_FRAME_SIZE:
                self.max_frame = value

    def _end(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.done.set()

    def _wake_senders(self) -> None:
        self.window_opened.set()
        self.window_opened = trio.Event()

    def _fail_all(self, reason: str) -> None:
        self.closed = reason
        for stream in self.streams.values():
            stream.error = reason
            stream.done.set()
        self.streams.clear()
        self._wake_senders()

    # Requests --------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> H2Response:
        if self.closed:
            raise H2Error(self.closed)
        stream_id = self.next_id
        self.next_id += 2
        stream = _Stream(self.initial_send_window)
        self.streams[stream_id] = stream
        fields = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", self.authority),
            *headers,
        ]
        if body:
            fields.append((b"content-length", str(len(body)).encode()))
        try:
            block = encode_fields(fields)
            if len(block) > self.max_frame:
                raise H2Error("request head larger than one frame")
            self.out += frame(HEADERS, END_HEADERS | (0 if body else END_STREAM), stream_id, block)
            await self._send_body(stream_id, stream, body)
            await self._flush()
            await stream.done.wait()
        except BaseException:
            # Cancelled or failed mid-flight: tell the server, forget the stream.
            if self.streams.pop(stream_id, None) is not None and not self.closed:
                self.out += frame(RST_STREAM, 0, stream_id, _HEAD.pack(ErrorCode.CANCEL))
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    await self._flush()
            raise
        if stream.error:
            raise H2Error(stream.error)
        return H2Response(stream.status, b"".join(stream.body))

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        view = memoryview(body)
        while view:
            room = min(self.send_window, stream.send_window, self.max_frame)
            if room <= 0:
                opened = self.window_opened
                await self._flush()
                await opened.wait()
                if self.closed or stream.error:
                    raise H2Error(stream.error or self.closed)
                continue
            chunk, view = view[:room], view[room:]
            self.send_window -= len(chunk)
            stream.send_window -= len(chunk)
            self.out += frame(DATA, 0 if view else END_STREAM, stream_id, bytes(chunk))


def _strip(payload: bytes, flags: int, kind: int) -> bytes:
    """The payload without padding (and a HEADERS frame's priority fields)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        start, end = 1, end - payload[0]
    if kind == HEADERS and flags & PRIORITY_FLAG:
        start += 5
    return payload[start:end]
