"""Sending one callback POST over HTTP/1.1 (h11 on trio), for the job runner's deliveries.

Owns `post`, which opens a connection to the callback URL's host (TLS with the system trust
store for https), sends the body with the given headers and returns the status code. Every
delivery has a timeout at the call site (the engine's cancel scope). Imports trio and h11;
nothing from quart or the rest of the emulator.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import h11
import trio

MAX_RESPONSE_BYTES = 64 * 1024


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
    """POST `body` to `url` and return the response status (the response body is drained)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    try:
        if tls:
            stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=host)
        connection = h11.Connection(h11.CLIENT)
        host_header = parts.netloc.rpartition("@")[2]
        request_headers = [
            ("Host", host_header),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *headers.items(),
        ]
        data = connection.send(h11.Request(method="POST", target=target, headers=request_headers))
        data = (data or b"") + (connection.send(h11.Data(data=body)) or b"")
        data += connection.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        status = 0
        received = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                chunk = await stream.receive_some(16384)
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES and status:
                    return status
                connection.receive_data(bytes(chunk))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return status
    finally:
        await stream.aclose()
