"""gRPC unary calls on raw routes: bytes in, bytes out, no .proto needed here.

Owns the gRPC wire format over HTTP/2 as far as a unary call needs it: the length-prefixed
message framing (`encode_message`, `decode_messages`), the status codes (`GrpcStatus`),
`GrpcError`, and `grpc_unary_route(path, handler)`, a POST raw route at `/package.Service/Method`
that reads the one request message, awaits `handler(request, message) -> bytes`, and answers
the reply with `grpc-status: 0` in the trailers. A `GrpcError` (and any other failure, as
INTERNAL; an `ApiError` by its HTTP status) is a Trailers-Only answer: one HEADERS frame with
`grpc-status` and the percent-encoded `grpc-message`. (De)serialising the messages (protobuf)
is the service's business.

Needs the server's ASGI `http.response.trailers` extension, i.e. HTTP/2 (the emulator's own
server and Hypercorn both offer it there). Without it the route answers 415 JSON in its family;
the emulator's own HTTP/1.1 server refuses gRPC even before the route runs. Not supported:
compressed messages (UNIMPLEMENTED), streaming calls, `grpc-timeout` (the client enforces its
own deadline).

Generic: knows nothing about any service; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import enum
import logging
import struct
from collections.abc import Awaitable, Callable

from ..platform.errors import ApiError, framework_error
from .rawasgi import ClientGone, Headers, RawRequest, RawRoute

log = logging.getLogger("emulator.grpc")

TRAILERS_EXTENSION = "http.response.trailers"
# gRPC's default largest message a server accepts.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
BODY_SECONDS = 30.0
_PREFIX = struct.Struct(">BI")

GrpcHandler = Callable[[RawRequest, bytes], Awaitable[bytes]]


class GrpcStatus(enum.IntEnum):
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


# An ApiError raised by a handler (or by reading the body), by its HTTP status.
_FROM_HTTP = {
    400: GrpcStatus.INVALID_ARGUMENT,
    401: GrpcStatus.UNAUTHENTICATED,
    403: GrpcStatus.PERMISSION_DENIED,
    404: GrpcStatus.NOT_FOUND,
    408: GrpcStatus.DEADLINE_EXCEEDED,
    409: GrpcStatus.ALREADY_EXISTS,
    413: GrpcStatus.RESOURCE_EXHAUSTED,
    429: GrpcStatus.RESOURCE_EXHAUSTED,
    501: GrpcStatus.UNIMPLEMENTED,
    503: GrpcStatus.UNAVAILABLE,
}


class GrpcError(Exception):
    """A call's failure: its status and a message for the client."""

    def __init__(self, status: GrpcStatus, message: str = "") -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


def encode_message(message: bytes) -> bytes:
    """One uncompressed length-prefixed message."""
    return _PREFIX.pack(0, len(message)) + message


def decode_messages(data: bytes) -> list[bytes]:
    """The messages of a request body; GrpcError when the framing is broken or a message is
    compressed (this emulator negotiates no compression)."""
    messages: list[bytes] = []
    position = 0
    while position < len(data):
        if len(data) - position < _PREFIX.size:
            raise GrpcError(GrpcStatus.INTERNAL, "truncated message prefix")
        compressed, length = _PREFIX.unpack_from(data, position)
        position += _PREFIX.size
        if compressed:
            raise GrpcError(GrpcStatus.UNIMPLEMENTED, "compressed messages are not supported")
        if len(data) - position < length:
            raise GrpcError(GrpcStatus.INTERNAL, "truncated message")
        messages.append(data[position : position + length])
        position += length
    return messages


def percent_encode(message: str) -> bytes:
    """`grpc-message` encoding: printable ASCII except '%' stays, every other byte is %XX."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def status_trailers(status: GrpcStatus, message: str = "") -> Headers:
    trailers: Headers = [(b"grpc-status", str(int(status)).encode("ascii"))]
    if message:
        trailers.append((b"grpc-message", percent_encode(message)))
    return trailers


def grpc_unary_route(
    path: str,
    handler: GrpcHandler,
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    summary: str = "",
) -> RawRoute:
    """A raw route serving the unary gRPC method at `path` (`/package.Service/Method`)."""

    async def serve(request: RawRequest) -> None:
        if TRAILERS_EXTENSION not in (request.scope.get("extensions") or {}):
            error = framework_error(request.family, 415, request.path, request.method)
            error.description = "gRPC needs HTTP/2 (h2c with prior knowledge, or HTTPS)."
            await request.respond_error(error)
            return
        try:
            body = await request.read_body(max_message_bytes + _PREFIX.size, BODY_SECONDS)
            messages = decode_messages(body)
            if len(messages) != 1:
                count = len(messages)
                raise GrpcError(GrpcStatus.INTERNAL, f"a unary call takes one message, not {count}")
            reply = await handler(request, messages[0])
        except ClientGone:
            raise
        except GrpcError as error:
            await _trailers_only(request, error.status, error.message)
            return
        except ApiError as error:
            status = _FROM_HTTP.get(error.status, GrpcStatus.UNKNOWN)
            await _trailers_only(request, status, error.description)
            return
        except Exception as error:
            log.error("unhandled error in gRPC method %s", request.path, exc_info=error)
            await _trailers_only(request, GrpcStatus.INTERNAL, "the emulator failed; see its log")
            return
        await request.start(200, [(b"content-type", b"application/grpc")], trailers=True)
        await request.send_body(encode_message(reply), more=False)
        await request.send_trailers(status_trailers(GrpcStatus.OK))

    return RawRoute("POST", path, serve, summary)


async def _trailers_only(request: RawRequest, status: GrpcStatus, message: str) -> None:
    await request.start(200, [(b"content-type", b"application/grpc")], trailers=True)
    await request.send_body(b"", more=False)
    await request.send_trailers(status_trailers(status, message))
