"""gRPC unary calls on raw routes: bytes in, bytes out, no .proto needed here.

Owns `grpc_unary_route(path, handler)` (the wire format itself, framing, status codes and
`GrpcError`, is emulator.web.grpcwire), a POST raw route at `/package.Service/Method`
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

import logging
from collections.abc import Awaitable, Callable

from ..platform.errors import ApiError, framework_error
from .grpcwire import HEADER as FRAME_HEADER
from .grpcwire import GrpcError, StatusCode, decode_messages, encode_message, trailers
from .rawasgi import ClientGone, RawRequest, RawRoute

log = logging.getLogger("emulator.grpc")

TRAILERS_EXTENSION = "http.response.trailers"
# gRPC's default largest message a server accepts.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
BODY_SECONDS = 30.0

GrpcHandler = Callable[[RawRequest, bytes], Awaitable[bytes]]


# An ApiError raised by a handler (or by reading the body), by its HTTP status.
_FROM_HTTP = {
    400: StatusCode.INVALID_ARGUMENT,
    401: StatusCode.UNAUTHENTICATED,
    403: StatusCode.PERMISSION_DENIED,
    404: StatusCode.NOT_FOUND,
    408: StatusCode.DEADLINE_EXCEEDED,
    409: StatusCode.ALREADY_EXISTS,
    413: StatusCode.RESOURCE_EXHAUSTED,
    429: StatusCode.RESOURCE_EXHAUSTED,
    501: StatusCode.UNIMPLEMENTED,
    503: StatusCode.UNAVAILABLE,
}


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
            body = await request.read_body(max_message_bytes + FRAME_HEADER.size, BODY_SECONDS)
            messages = decode_messages(body, max_message_bytes)
            if len(messages) != 1:
                count = len(messages)
                raise GrpcError(StatusCode.INTERNAL, f"a unary call takes one message, not {count}")
            reply = await handler(request, messages[0])
        except ClientGone:
            raise
        except GrpcError as error:
            await _trailers_only(request, error.code, error.message)
            return
        except ApiError as error:
            status = _FROM_HTTP.get(error.status, StatusCode.UNKNOWN)
            await _trailers_only(request, status, error.description)
            return
        except Exception as error:
            log.error("unhandled error in gRPC method %s", request.path, exc_info=error)
            await _trailers_only(request, StatusCode.INTERNAL, "the emulator failed; see its log")
            return
        await request.start(200, [(b"content-type", b"application/grpc")], trailers=True)
        await request.send_body(encode_message(reply), more=False)
        await request.send_trailers(trailers(StatusCode.OK))

    return RawRoute("POST", path, serve, summary)


async def _trailers_only(request: RawRequest, status: StatusCode, message: str) -> None:
    await request.start(200, [(b"content-type", b"application/grpc")], trailers=True)
    await request.send_body(b"", more=False)
    await request.send_trailers(trailers(status, message))
