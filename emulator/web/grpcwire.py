"""gRPC over HTTP/2, the parts that need no server: framing, status, timeouts, request checks.

Owns `StatusCode` (the canonical gRPC codes), `encode_message`, `MessageDecoder` and
`decode_messages` (the length-prefixed message framing: one flag byte, a four-byte big-endian
length, the bytes), `GrpcError` (a status code and message to end a call with),
`encode_grpc_message` / `decode_grpc_message` (the percent-encoding of `grpc-message`),
`trailers`, `parse_timeout` (`grpc-timeout`) and `check_request` (method, content type and
encoding of an incoming call). Shared by every service that serves gRPC (emulator.web.grpc for
unary routes; a service maps its own errors to codes). Pure functions: imports nothing from
trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Mapping

import attrs

HEADER = struct.Struct(">BI")
# The grpc default for a received message; bigger ones end the call with RESOURCE_EXHAUSTED.
DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024
CONTENT_TYPE = "application/grpc"


class StatusCode(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@attrs.define(auto_exc=True, eq=False)
class GrpcError(Exception):
    code: StatusCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def encode_message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return HEADER.pack(0, len(payload)) + payload


@attrs.define
class MessageDecoder:
    """Splits a request body into messages as bytes arrive (any chunking)."""

    max_message: int = DEFAULT_MAX_MESSAGE
    _buffer: bytearray = attrs.field(factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= HEADER.size:
            flag, length = HEADER.unpack_from(self._buffer)
            if flag not in (0, 1):
                raise GrpcError(StatusCode.INTERNAL, f"Bad message flag {flag}.")
            if flag == 1:
                # No grpc-encoding is offered (grpc-accept-encoding says identity), so a
                # compressed message is a protocol error the spec answers with UNIMPLEMENTED.
                raise GrpcError(StatusCode.UNIMPLEMENTED, "Compressed messages are not supported.")
            if length > self.max_message:
                raise GrpcError(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"Message of {length} bytes is larger than {self.max_message}.",
                )
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            messages.append(bytes(self._buffer[HEADER.size : end]))
            del self._buffer[:end]
        return messages

    def finish(self) -> None:
        """The body ended: a partial message is an error."""
        if self._buffer:
            raise GrpcError(StatusCode.INTERNAL, "The request ended inside a message.")


def decode_messages(data: bytes, max_message: int = DEFAULT_MAX_MESSAGE) -> list[bytes]:
    """Every message of a whole request body; GrpcError when the framing is broken."""
    decoder = MessageDecoder(max_message)
    messages = decoder.feed(data)
    decoder.finish()
    return messages


_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def encode_grpc_message(text: str) -> str:
    """Percent-encode as the gRPC spec asks: UTF-8, then every byte outside 0x20-0x7E and '%'."""
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def decode_grpc_message(text: str) -> str:
    """The inverse; a malformed escape is kept as written (the spec says never to fail on it)."""
    out = bytearray()
    i = 0
    raw = text.encode("ascii", "replace")
    while i < len(raw):
        if raw[i] == ord("%") and i + 2 < len(raw) and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(chr(b) in "0123456789abcdefABCDEF" for b in pair)


def trailers(code: StatusCode, message: str = "") -> list[tuple[bytes, bytes]]:
    fields = [(b"grpc-status", str(int(code)).encode())]
    if message:
        fields.append((b"grpc-message", encode_grpc_message(message).encode("ascii")))
    return fields


_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str | None) -> float | None:
    """`grpc-timeout` in seconds (None when absent). At most 8 digits and one unit letter."""
    if value is None:
        return None
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isascii() and digits.isdigit()) or unit not in _UNITS:
        raise GrpcError(StatusCode.INVALID_ARGUMENT, f"Malformed grpc-timeout {value[:20]!r}.")
    return int(digits) * _UNITS[unit]


@attrs.frozen
class CallHeaders:
    path: str
    authorization: str | None
    timeout: float | None


def check_request(method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> CallHeaders:
    """Check an incoming call's head; a GrpcError says what is wrong with it."""
    fields: Mapping[str, str] = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers
    }
    if method != "POST":
        raise GrpcError(StatusCode.UNIMPLEMENTED, f"gRPC calls use POST, not {method}.")
    content_type = fields.get("content-type", "")
    if not (content_type == CONTENT_TYPE or content_type.startswith(CONTENT_TYPE + "+proto")):
        raise GrpcError(
            StatusCode.INVALID_ARGUMENT,
            f"Content type must be {CONTENT_TYPE}, not {content_type[:64]!r}.",
        )
    encoding = fields.get("grpc-encoding", "identity")
    if encoding != "identity":
        raise GrpcError(StatusCode.UNIMPLEMENTED, f"grpc-encoding {encoding} is not supported.")
    return CallHeaders(
        path=path,
        authorization=fields.get("authorization"),
        timeout=parse_timeout(fields.get("grpc-timeout")),
    )
