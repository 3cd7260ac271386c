"""A lean HTTP/1.1 client connection on raw trio sockets, for the load generator.

Owns request encoding (pre-built bytes), response parsing (status, Content-Length, chunked)
and keep-alive. It parses only what the load generator needs, so that one core of client
can drive a server that saturates another core; h11 costs about as much CPU per request as
the calibration server spends, which would make the generator the bottleneck.
Imports only trio and the standard library.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence

import trio

RECV_SIZE = 256 * 1024


class HttpError(Exception):
    """The peer broke the protocol or closed the connection mid-response."""


def encode_request(
    method: str,
    target: str,
    host: str,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    *,
    chunked: bool = False,
) -> bytes:
    """The bytes of one request head (and body, unless `chunked`)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif body is not None or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body or b'')}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if chunked or not body else head + body


class Head:
    """A parsed response head: status, framing and the raw header block."""

    __slots__ = ("chunked", "close", "length", "raw", "status")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        if raw[:7] != b"HTTP/1." or len(raw) < 12:
            raise HttpError(f"not an HTTP/1.1 response: {raw[:40]!r}")
        self.status = int(raw[9:12])
        lower = raw.lower()
        self.chunked = b"\r\ntransfer-encoding: chunked" in lower
        self.close = b"\r\nconnection: close" in lower
        index = lower.find(b"\r\ncontent-length:")
        if index >= 0:
            end = lower.find(b"\r\n", index + 17)
            self.length: int | None = int(lower[index + 17 : end if end >= 0 else None])
        elif self.chunked or self.status in (204, 304) or 100 <= self.status < 200:
            self.length = None if self.chunked else 0
        else:
            self.length = None  # until close

    def header(self, name: str) -> str | None:
        for line in self.raw.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


class Response:
    __slots__ = ("body", "head")

    def __init__(self, head: Head, body: bytes) -> None:
        self.head = head
        self.body = body

    @property
    def status(self) -> int:
        return self.head.status


class H1Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, *, rcvbuf: int | None = None) -> H1Connection:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def close(self) -> None:
        self.closed = True
        self.sock.close()

    async def send(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            sent = await self.sock.send(view)
            view = view[sent:]

    async def _fill(self) -> None:
        data = await self.sock.recv(RECV_SIZE)
        if not data:
            raise HttpError("connection closed by the server")
        self.buf += data

    async def read_head(self) -> Head:
        buf = self.buf
        while True:
            index = buf.find(b"\r\n\r\n")
            if index >= 0:
                head = Head(bytes(buf[:index]))
                del buf[: index + 4]
                if 100 <= head.status < 200:  # an interim response; the real one follows
                    continue
                return head
            await self._fill()

    async def _read_line(self) -> bytes:
        while True:
            index = self.buf.find(b"\r\n")
            if index >= 0:
                line = bytes(self.buf[:index])
                del self.buf[: index + 2]
                return line
            await self._fill()

    async def read_body(self, head: Head, sink: Callable[[bytes], object]) -> None:
        """Feed the body to `sink` piece by piece as it arrives (chunked or sized)."""
        if head.chunked:
            while True:
                line = await self._read_line()
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise HttpError(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    while await self._read_line():
                        pass  # trailers
                    break
                await self._read_sized(size, sink)
                if await self._read_line():
                    raise HttpError("chunk not followed by CRLF")
        elif head.length is not None:
            await self._read_sized(head.length, sink)
        else:
            raise HttpError("response without a length (read until close) is not supported")
        if head.close:
            self.close()

    async def _read_sized(self, size: int, sink: Callable[[bytes], object]) -> None:
        remaining = size
        buf = self.buf
        while remaining:
            if buf:
                take = min(remaining, len(buf))
                sink(bytes(buf[:take]) if take < len(buf) else bytes(buf))
                del buf[:take]
                remaining -= take
                continue
            data = await self.sock.recv(RECV_SIZE)
            if not data:
                raise HttpError("connection closed in the middle of a body")
            if len(data) <= remaining:
                sink(data)
                remaining -= len(data)
            else:
                sink(data[:remaining])
                buf += data[remaining:]
                remaining = 0

    async def read_response(self) -> Response:
        head = await self.read_head()
        if head.length is not None and not head.chunked and len(self.buf) >= head.length:
            # The common small case: the whole body is already here.
            body = bytes(self.buf[: head.length])
            del self.buf[: head.length]
            if head.close:
                self.close()
            return Response(head, body)
        parts: list[bytes] = []
        await self.read_body(head, parts.append)
        return Response(head, b"".join(parts))

    async def request(self, data: bytes) -> Response:
        if self.closed:
            raise HttpError("connection was closed by the server")
        await self.send(data)
        return await self.read_response()
