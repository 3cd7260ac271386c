"""Reading HTTP/1.1 requests from a connection's bytes (RFC 9112): heads, then bodies framed by
Content-Length or chunked transfer coding.

Owns the receive buffer of one connection and every check a request must pass before the app
sees it. A head is refused (`BadRequest`, with the status to answer) for:

- a bare LF or CR, or a control byte other than HTAB (checked as the bytes arrive, so such a
  head is refused without waiting for its end);
- a malformed request line, a method with lower-case letters, a version other than 1.0 and 1.1;
- a malformed field line: an empty or non-token name, white space before the colon, a line
  folded onto the one before (obs-fold, which RFC 9112 section 5.2 lets a server refuse);
- HTTP/1.1 without exactly one Host; Content-Length that is not digits or disagrees with
  another; Transfer-Encoding other than `chunked` (501); both Content-Length and
  Transfer-Encoding (section 6.1);
- a head longer than `max_head_bytes` (431), whole or still arriving.

Empty lines before a request line are skipped (section 2.2). A chunked body is refused for a
malformed chunk-size line (or one over `CHUNK_LINE_BYTES`), a chunk not followed by CRLF and
malformed trailer lines (whose fields are dropped); a body cut short by the end of the input is
refused too. An error in a body sticks: every later read raises it again.

Replaces h11 for reading: the same checks (and the ones h11 left to the emulator) in one pass
over each head instead of several, and no event objects. Generic: knows nothing about the
emulator's services.
"""

from __future__ import annotations

import enum
import re

# What a head may not contain: a control byte other than HTAB, CR and LF (CR and LF are
# checked as pairs by counting, cheaper than a regex with look-arounds).
_CONTROL = {*range(0x20), 0x7F} - {0x09, 0x0A, 0x0D}
# Every byte not refused, deleted by `bytes.translate` (faster here than a regex search).
ALLOWED_BYTES = bytes(byte for byte in range(256) if byte not in _CONTROL)
_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/(1\.[01])")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
# The longest chunk-size line (with its extensions) a chunked body may have.
CHUNK_LINE_BYTES = 4096


class Phase(enum.Enum):
    """What the reader expects next."""

    HEAD = "head"
    BODY = "body"


class Framing(enum.Enum):
    """How a request's body is delimited."""

    LENGTH = "length"
    CHUNKED = "chunked"


class Chunk(enum.Enum):
    """Where a chunked body is."""

    SIZE = "chunk-size line"
    DATA = "chunk data"
    DATA_END = "CRLF after chunk data"
    TRAILERS = "trailer lines"


class BadRequest(Exception):
    """The request cannot be served: answer `status` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class RequestHead:
    """A request's line and fields; names lower-cased, values without surrounding white space."""

    __slots__ = ("expects_continue", "headers", "method", "target", "version")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        expects_continue: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.expects_continue = expects_continue


def illegal_head(data: bytes | bytearray, previous: bytes | bytearray = b"") -> bool:
    """Whether the head bytes in `data` (up to the blank line that ends a head) hold what
    RFC 9112 refuses: a bare LF, a bare CR, a control byte. `previous` is the last bytes (up
    to 4) of the same head before `data`: the blank line, or a CR LF pair, can be split."""
    if previous:
        end = (previous + data).find(b"\r\n\r\n")
        part = data if end < 0 else data[: max(0, end + 4 - len(previous))]
        if previous[-1:] == b"\r":
            # Left out of the last check (it might pair with this read's first byte).
            part = b"\r" + part
    else:
        end = data.find(b"\r\n\r\n")
        part = data if end < 0 else data[: end + 4]
    if end < 0 and part[-1:] == b"\r":
        part = part[:-1]
    pairs = part.count(b"\r\n")
    if part.count(b"\n") != pairs or part.count(b"\r") != pairs:
        return True
    return bool(part.translate(None, ALLOWED_BYTES))


def parse_head(head: bytes) -> tuple[RequestHead, Framing | None, int]:
    """The head (without its blank line), its body framing (None: no body) and the length;
    raises BadRequest."""
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        raise BadRequest(400, "malformed request line")
    method, target, version = line.groups()
    if not method.isupper():
        raise BadRequest(400, "a method with lower-case letters")
    headers: list[tuple[bytes, bytes]] = []
    hosts = 0
    length: bytes | None = None
    chunked = False
    expects_continue = False
    token = _TOKEN.fullmatch
    for field in lines[1:]:
        name, colon, value = field.partition(b":")
        if not colon or token(name) is None:
            raise BadRequest(400, "malformed field line")
        name = name.lower()
        value = value.strip(b" \t")
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            for item in value.split(b","):
                item = item.strip(b" \t")
                if _DIGITS.fullmatch(item) is None or (length is not None and item != length):
                    raise BadRequest(400, "malformed or conflicting Content-Length")
                length = item
            if any(existing == b"content-length" for existing, _ in headers):
                continue  # a repeat of the same length
            value = length or b""
        elif name == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                raise BadRequest(501, "only Transfer-Encoding: chunked is supported")
            chunked = True
        elif name == b"expect":
            expects_continue = b"100-continue" in value.lower()
        headers.append((name, value))
    if version == b"1.1" and hosts != 1:
        raise BadRequest(400, "HTTP/1.1 needs exactly one Host")
    if chunked and length is not None:
        raise BadRequest(400, "both Content-Length and Transfer-Encoding")
    request = RequestHead(method, target, version, headers, expects_continue and version == b"1.1")
    if chunked:
        return request, Framing.CHUNKED, 0
    if length is not None and length.lstrip(b"0"):
        return request, Framing.LENGTH, int(length)
    return request, None, 0


class RequestReader:
    """The requests of one connection, from the bytes `feed` gives it."""

    def __init__(self, max_head_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.buffer = bytearray()
        # The client has closed its side: no more bytes will come.
        self.eof = False
        self.phase = Phase.HEAD
        # Whether a `100 Continue` would still be useful: the head asked for one and no byte
        # of the body has been taken yet.
        self.waiting_for_continue = False
        # How much of the buffer the head check has seen (the head being received).
        self._checked = 0
        self._framing: Framing | None = None
        self._left = 0
        self._chunk_step = Chunk.SIZE
        self._trailer_bytes = 0
        self._error: BadRequest | None = None

    def feed(self, data: bytes) -> None:
        """Bytes received; b"" when the client closed its side."""
        if data:
            self.buffer += data
        else:
            self.eof = True

    def take_rest(self) -> bytes:
        """Everything buffered after the request (a WebSocket's first frames)."""
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest

    # Heads -----------------------------------------------------------------------------------

    def read_head(self) -> RequestHead | None:
        """The next request head, or None until more bytes (or the end) arrive. At the end of
        the input with nothing buffered, None with `eof` set; raises BadRequest."""
        buffer = self.buffer
        checked = self._checked
        if not checked:
            while buffer[:2] == b"\r\n":
                del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if illegal_head(buffer[checked:], buffer[max(0, checked - 4) : checked]):
                raise BadRequest(400, "a bare CR or LF, or a control byte, in the head")
            self._checked = len(buffer)
            if len(buffer) > self.max_head_bytes:
                raise BadRequest(431, "request head too large")
            if self.eof and buffer:
                raise BadRequest(400, "the connection ended inside a request head")
            return None
        self._checked = 0
        if illegal_head(buffer[checked : end + 4], buffer[max(0, checked - 4) : checked]):
            raise BadRequest(400, "a bare CR or LF, or a control byte, in the head")
        if end + 4 > self.max_head_bytes:
            raise BadRequest(431, "request head too large")
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        request, framing, length = parse_head(head)
        self._framing = framing
        if framing is None:
            self.waiting_for_continue = False
            return request
        self.phase = Phase.BODY
        self._left = length
        self._chunk_step = Chunk.SIZE
        self._trailer_bytes = 0
        self.waiting_for_continue = request.expects_continue
        return request

    # Bodies ----------------------------------------------------------------------------------

    def read_body(self) -> bytes | None:
        """The next piece of the request body (b"" once it is complete), or None until more
        bytes arrive; raises BadRequest (again on every call once it has)."""
        if self._error is not None:
            raise self._error
        if self.phase is not Phase.BODY:
            return b""
        try:
            if self._framing is Framing.LENGTH:
                piece = self._length_piece()
            else:
                piece = self._chunked_piece()
        except BadRequest as error:
            self._error = error
            raise
        if piece is not None:
            self.waiting_for_continue = False
            if not piece:
                self.phase = Phase.HEAD
        return piece

    def _length_piece(self) -> bytes | None:
        left = self._left
        if not left:
            return b""
        buffer = self.buffer
        if not buffer:
            return self._starved()
        if len(buffer) <= left:
            piece = bytes(buffer)
            buffer.clear()
        else:
            piece = bytes(buffer[:left])
            del buffer[:left]
        self._left = left - len(piece)
        return piece

    def _chunked_piece(self) -> bytes | None:
        buffer = self.buffer
        while True:
            step = self._chunk_step
            if step is Chunk.DATA:
                if not buffer:
                    return self._starved()
                left = self._left
                piece = bytes(buffer[:left])
                del buffer[: len(piece)]
                self._left = left - len(piece)
                if not self._left:
                    self._chunk_step = Chunk.DATA_END
                return piece
            end = buffer.find(b"\r\n")
            if step is Chunk.SIZE:
                if end < 0:
                    if len(buffer) > CHUNK_LINE_BYTES:
                        raise BadRequest(400, "chunk-size line too long")
                    return self._starved()
                line = _CHUNK_LINE.fullmatch(buffer, 0, end)
                if line is None or end > CHUNK_LINE_BYTES:
                    raise BadRequest(400, "malformed chunk-size line")
                size = int(line.group(1), 16)
                del buffer[: end + 2]
                if size:
                    self._left = size
                    self._chunk_step = Chunk.DATA
                else:
                    self._chunk_step = Chunk.TRAILERS
            elif step is Chunk.DATA_END:
                if len(buffer) < 2:
                    return self._starved()
                if buffer[:2] != b"\r\n":
                    raise BadRequest(400, "chunk data not followed by CRLF")
                del buffer[:2]
                self._chunk_step = Chunk.SIZE
            else:  # trailer lines, up to an empty one; their fields are dropped
                if end < 0:
                    if self._trailer_bytes + len(buffer) > self.max_head_bytes:
                        raise BadRequest(431, "trailers too large")
                    return self._starved()
                line_bytes = bytes(buffer[:end])
                del buffer[: end + 2]
                self._trailer_bytes += end + 2
                if not line_bytes:
                    return b""
                name, colon, _ = line_bytes.partition(b":")
                if (
                    not colon
                    or _TOKEN.fullmatch(name) is None
                    or illegal_head(line_bytes)
                    or self._trailer_bytes > self.max_head_bytes
                ):
                    raise BadRequest(400, "malformed trailer line")

    def _starved(self) -> bytes | None:
        """None: wait for more bytes (a body cut short by the end of the input is refused)."""
        if self.eof:
            raise BadRequest(400, "the connection ended inside a request body")
        return None
