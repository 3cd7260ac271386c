"""Writing HTTP/1.1 responses (RFC 9112): the head, and how the body is delimited.

The emulator's own HTTP/1.1 server (emulator.transport.h1) reads requests with h11 and writes
its answers with this module: h11 checked and rebuilt every response's headers two or three
times over (about 28 us a response, more than half of what a small exchange cost to read and
write). Owns `start_response` (the head's bytes, the framing, whether the connection stays
open) and `Framing` (a body delimited by its Content-Length, chunked, by the end of the
connection, or absent).

The app's headers are checked once, as a whole: a name that is not a token, or a value with a
control character (CR and LF above all: response splitting), refuses the response with
`BadResponse` before anything is written. Generic: knows nothing about the services.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from http import HTTPStatus

REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
# What a header name may not hold (RFC 9110 section 5.6.2: names are tokens).
_NOT_TOKEN = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
# What a header value may not hold: control characters other than HTAB (RFC 9110 5.5).
_NOT_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
CHUNKED_END = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BadResponse(Exception):
    """The app's response cannot be written as given (a bad header, a body that does not
    match its Content-Length)."""


class Delimit(enum.Enum):
    """How a response body ends: after its declared bytes (`LENGTH`), at its last chunk
    (`CHUNKED`), when the connection closes (`CLOSE`: HTTP/1.0 clients), or at once (`NONE`:
    HEAD, 1xx, 204, 304; bytes given are dropped)."""

    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"
    NONE = "none"


class Framing:
    """A response body on the wire, delimited as its `kind` says."""

    LENGTH = Delimit.LENGTH
    CHUNKED = Delimit.CHUNKED
    CLOSE = Delimit.CLOSE
    NONE = Delimit.NONE

    __slots__ = ("kind", "left")

    def __init__(self, kind: Delimit, length: int = 0) -> None:
        self.kind = kind
        # LENGTH: bytes still owed to the declared length.
        self.left = length

    def pieces(self, data: bytes) -> list[bytes]:
        """`data` as framed pieces to write (none for an empty piece or no body)."""
        if not data:
            return []
        kind = self.kind
        if kind is Framing.CHUNKED:
            return [b"%x\r\n" % len(data), data, b"\r\n"]
        if kind is Framing.LENGTH:
            if len(data) > self.left:
                raise BadResponse("more body than its Content-Length")
            self.left -= len(data)
            return [data]
        if kind is Framing.CLOSE:
            return [data]
        return []

    def frame(self, data: bytes) -> bytes:
        """`data` framed, as one bytes object."""
        pieces = self.pieces(data)
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    def end(self) -> bytes:
        """What ends the body (raises BadResponse if it fell short of its Content-Length)."""
        if self.kind is Framing.CHUNKED:
            return CHUNKED_END
        if self.kind is Framing.LENGTH and self.left:
            raise BadResponse("less body than its Content-Length")
        return b""


def start_response(
    status: int,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    date: bytes,
    whole: int | None,
    http10: bool,
    keep_alive: bool,
    head_only: bool,
) -> tuple[bytes, Framing, bool]:
    """The head's bytes, the body's framing and whether the connection stays open after it.

    `whole`: the body's length when the app gave it whole in one message (a Content-Length is
    added unless the app gave one); None when more may follow (chunked for HTTP/1.1 clients,
    ended by closing for HTTP/1.0 ones). `keep_alive`: whether the request lets the
    connection stay open. A HEAD answer has the head a GET would have, and no body."""
    try:
        names = b"".join([name for name, _ in headers])
        values = b"".join([value for _, value in headers])
    except TypeError:
        raise BadResponse("header names and values must be bytes") from None
    if _NOT_TOKEN.search(names) or _NOT_VALUE.search(values):
        raise BadResponse("a header name that is not a token, or a control character in a value")
    length: int | None = None
    chunked = close_given = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            text = value.strip()
            if not text.isdigit() or (length is not None and int(text) != length):
                raise BadResponse(f"bad Content-Length {value!r}")
            length = int(text)
        elif lowered == b"transfer-encoding":
            if value.strip().lower() != b"chunked":
                raise BadResponse(f"Transfer-Encoding {value!r}: only chunked is written")
            chunked = True
        elif lowered == b"connection" and b"close" in value.lower():
            close_given = True
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b""))]
    for name, value in headers:
        lowered = name.lower()
        # A body of unknown length drops a declared length (RFC 9112 6.3), and HTTP/1.0
        # clients know no chunked coding.
        if (lowered == b"content-length" and chunked) or (
            lowered == b"transfer-encoding" and http10
        ):
            continue
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"date: %s\r\n" % date)
    if status < 200 or status in (204, 304):
        framing = Framing(Framing.NONE)
    elif length is not None and not chunked:
        framing = Framing(Framing.LENGTH, length)
    elif chunked or whole is None:
        if http10:
            framing = Framing(Framing.CLOSE)
            keep_alive = False
        else:
            framing = Framing(Framing.CHUNKED)
            if not chunked:
                lines.append(b"transfer-encoding: chunked\r\n")
    else:
        framing = Framing(Framing.LENGTH, whole)
        lines.append(b"content-length: %d\r\n" % whole)
    if close_given:
        keep_alive = False
    elif not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if head_only:
        framing = Framing(Framing.NONE)
    return b"".join(lines), framing, keep_alive
