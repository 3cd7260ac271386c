"""A small HTTP/2 cleartext (h2c, prior knowledge) client on trio and the h2 state machine.

Owns one multiplexed connection: many concurrent requests as streams, a reader task that
routes frames to their stream, flow-control acknowledgements, and serialised writes (frames
leave in the order the state machine produced them, so stream ids stay increasing).
Imports trio, h2 and the standard library.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio

WINDOW = 2**24


class H2Error(Exception):
    """A stream was reset or the connection ended before the response was complete."""


class _Stream:
    __slots__ = ("body", "done", "error", "status")

    def __init__(self) -> None:
        self.status = 0
        self.body: list[bytes] = []
        self.done = trio.Event()
        self.error: str | None = None


class H2Response:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class H2Connection:
    """Open with `await H2Connection.open(nursery, host, port)`; close with `close()`."""

    def __init__(self, sock: trio.socket.SocketType, authority: str) -> None:
        self.sock = sock
        self.authority = authority.encode()
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        self.write_lock = trio.Lock()
        self.closed: str | None = None

    @classmethod
    async def open(cls, nursery: trio.Nursery, host: str, port: int) -> H2Connection:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await sock.connect((host, port))
        self = cls(sock, f"{host}:{port}")
        self.conn.initiate_connection()
        self.conn.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        self.conn.increment_flow_control_window(2**30)
        await self._flush()
        nursery.start_soon(self._read_loop)
        return self

    def close(self) -> None:
        self.closed = self.closed or "closed by the client"
        self.sock.close()

    async def _flush(self) -> None:
        async with self.write_lock:
            data = self.conn.data_to_send()
            view = memoryview(data)
            while view:
                sent = await self.sock.send(view)
                view = view[sent:]

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.sock.recv(256 * 1024)
                if not data:
                    raise H2Error("connection closed by the server")
                for event in self.conn.receive_data(data):
                    self._handle(event)
                await self._flush()
        except (OSError, H2Error, h2.exceptions.ProtocolError) as error:
            self._fail_all(f"{type(error).__name__}: {error}")

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                for name, value in event.headers or ():
                    if name == b":status":
                        stream.status = int(value)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None and event.data:
                stream.body.append(event.data)
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.done.set()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                stream.error = f"stream reset by the server (error code {event.error_code})"
                stream.done.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise H2Error(f"server sent GOAWAY (error code {event.error_code})")

    def _fail_all(self, reason: str) -> None:
        self.closed = reason
        for stream in self.streams.values():
            stream.error = reason
            stream.done.set()
        self.streams.clear()

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes = b"",
    ) -> H2Response:
        if self.closed:
            raise H2Error(self.closed)
        stream_id = self.conn.get_next_available_stream_id()
        stream = _Stream()
        self.streams[stream_id] = stream
        request_headers = [
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", self.authority),
            *headers,
        ]
        if body:
            request_headers.append((b"content-length", str(len(body)).encode()))
        try:
            self.conn.send_headers(stream_id, request_headers, end_stream=not body)
            if body:
                self.conn.send_data(stream_id, body, end_stream=True)
            await self._flush()
            await stream.done.wait()
        except BaseException:
            # Cancelled or failed mid-flight: tell the server, forget the stream.
            if self.streams.pop(stream_id, None) is not None and not self.closed:
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.reset_stream(stream_id)
            raise
        if stream.error:
            raise H2Error(stream.error)
        return H2Response(stream.status, b"".join(stream.body))
