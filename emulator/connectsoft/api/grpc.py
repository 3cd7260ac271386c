"""The three gRPC methods of ConnectSoft as raw ASGI routes over the emulator's HTTP/2 server.

Owns `grpc_routes`: `RuntimeInventory/GetServices` and `RuntimeDrift/GetFindings` (unary) and
`RuntimeHealth/StreamHealth` (server streaming: the current health first, then one update per
health change until the client cancels, the deadline passes or the emulator stops). Every call
checks the head (`grpcwire.check_request`), the bearer token in the `authorization` metadata and
then the same scope and tenant rules as REST; refusals before any message are Trailers-Only
answers (one HEADERS frame with `grpc-status` and `grpc-message`), later ones end the stream
with those trailers. `grpc-timeout` is a cancel scope around the whole call, whose effect is
DEADLINE_EXCEEDED.

Sending trailers needs the ASGI `http.response.trailers` extension (HTTP/2; the emulator's own
HTTP/1.1 server refuses gRPC before a route runs). Why not the shared emulator.web.grpc: it
serves unary calls only, and these need server streaming and `grpc-timeout`; the framing and
status helpers are in ..grpcwire. Imports trio, the engine, the core and protobuf.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from google.protobuf.message import DecodeError, Message

from ...web.grpcwire import (
    CONTENT_TYPE,
    GrpcError,
    MessageDecoder,
    StatusCode,
    check_request,
    encode_message,
    trailers,
)
from ...web.rawasgi import ClientGone, RawRequest, RawRoute
from ..core.access import Caller
from ..core.errors import DomainError
from ..engine import HealthSnapshot
from ..grpcwire import status_for_error
from ..protos import METHODS, PACKAGE, Method
from . import serializers
from .auth import caller_from
from .errors import PROBLEMS, SCHEMA_HEADER, SCHEMA_VERSION

if TYPE_CHECKING:
    from ..instance import ConnectSoftInstance

log = logging.getLogger("emulator.connectsoft.grpc")

TRAILERS_EXTENSION = "http.response.trailers"
MAX_REQUEST_BYTES = 64 * 1024
RESPONSE_HEADERS = [
    (b"content-type", CONTENT_TYPE.encode()),
    (b"grpc-accept-encoding", b"identity"),
    (SCHEMA_HEADER.encode(), SCHEMA_VERSION.encode()),
]
INVENTORY = f"/{PACKAGE}.RuntimeInventory/GetServices"
HEALTH = f"/{PACKAGE}.RuntimeHealth/StreamHealth"
DRIFT = f"/{PACKAGE}.RuntimeDrift/GetFindings"


class _Call:
    """One gRPC exchange: the response head once, messages, then the trailers."""

    def __init__(self, raw: RawRequest) -> None:
        self.raw = raw
        self.trailers_offered = TRAILERS_EXTENSION in (raw.scope.get("extensions") or {})

    async def start(self) -> None:
        await self.raw.start(200, RESPONSE_HEADERS, trailers=True)

    async def message(self, payload: bytes) -> None:
        await self.raw.send_body(encode_message(payload), more=True)

    async def finish(self, code: StatusCode, text: str = "") -> None:
        """End the call with its status in the trailers; before any message that is a
        Trailers-Only answer (the server sends head and trailers as one HEADERS frame)."""
        if not self.trailers_offered:
            # No trailers here (HTTP/1.1, or a server without the extension): the status goes
            # in the head of an empty answer, which is how Trailers-Only looks on the wire.
            await self.raw.respond(200, b"", [*RESPONSE_HEADERS, *trailers(code, text)])
            return
        if not self.raw.started:
            await self.start()
        await self.raw.send_body(b"", more=False)
        await self.raw.send_trailers(trailers(code, text))


Body = Callable[[_Call, Caller, Message], Awaitable[None]]


def grpc_routes(instance: ConnectSoftInstance) -> list[RawRoute]:
    settings = instance.context.settings

    async def get_services(call: _Call, caller: Caller, request: Any) -> None:
        engine = instance.engine
        env = engine.read(
            lambda: engine.state.inventory(caller, request.environment_id, request.tenant_id)
        )
        payload = serializers.services_message(env).SerializeToString()
        await call.start()
        await call.message(payload)
        await call.finish(StatusCode.OK)

    async def get_findings(call: _Call, caller: Caller, request: Any) -> None:
        engine = instance.engine
        env, findings = engine.read(lambda: engine.state.drift(caller, request.environment_id))
        payload = serializers.findings_message(env, findings).SerializeToString()
        await call.start()
        await call.message(payload)
        await call.finish(StatusCode.OK)

    async def stream_health(call: _Call, caller: Caller, request: Any) -> None:
        engine = instance.engine
        service = engine.read(
            lambda: engine.state.health(caller, request.service_id, request.environment_id or None)
        )
        key = (service.environment_id, service.service_id)
        with engine.health.subscribe(key) as subscription:
            await call.start()
            await call.message(
                serializers.health_message(HealthSnapshot.of(service)).SerializeToString()
            )
            while True:
                try:
                    snapshot = await subscription.receive()
                except trio.EndOfChannel:
                    break
                await call.message(serializers.health_message(snapshot).SerializeToString())
        await call.finish(StatusCode.UNAVAILABLE, "The emulator is stopping or was reset.")

    bodies: dict[str, Body] = {
        INVENTORY: get_services,
        DRIFT: get_findings,
        HEALTH: stream_health,
    }

    def route(method: Method, body: Body) -> RawRoute:
        async def serve(raw: RawRequest) -> None:
            call = _Call(raw)
            with contextlib.suppress(ClientGone):
                await _serve(instance, raw, call, method, body, settings.body_timeout)

        name = method.path.rsplit(".", 1)[-1]
        return RawRoute("POST", method.path, serve, f"gRPC {name}")

    return [route(METHODS[path], body) for path, body in bodies.items()]


async def _serve(
    instance: ConnectSoftInstance,
    raw: RawRequest,
    call: _Call,
    method: Method,
    body: Body,
    body_timeout: float,
) -> None:
    if not (raw.header(b"content-type") or "").startswith(CONTENT_TYPE):
        # Not a gRPC client at all: an HTTP answer it can read, as gRPC servers give (415).
        raise PROBLEMS.error(
            415, "UnsupportedMediaType", f"{raw.path} is a gRPC method: send {CONTENT_TYPE}."
        )
    try:
        head = check_request(raw.method, raw.path, raw.scope["headers"])
    except GrpcError as error:
        await call.finish(error.code, error.message)
        return
    if not call.trailers_offered:
        await call.finish(StatusCode.UNIMPLEMENTED, "gRPC needs HTTP/2 (with trailers).")
        return
    deadline = math.inf if head.timeout is None else head.timeout
    outcome: tuple[StatusCode, str] | None = None
    with trio.move_on_after(deadline) as scope:
        try:
            request = await _read_request(raw, method, body_timeout)
            caller = caller_from(head.authorization, instance.issuer, instance.engine.now())
        except GrpcError as error:
            outcome = (error.code, error.message)
        except DomainError as error:
            status = status_for_error(error)
            outcome = (status.code, status.message)
        else:
            # A client that cancels (RST_STREAM) or goes away ends the call at once.
            async with raw.cancelled_when_gone():
                outcome = await _guarded(body(call, caller, request))
    if scope.cancelled_caught:
        outcome = (StatusCode.DEADLINE_EXCEEDED, "The deadline passed.")
    if outcome is not None and not raw.finished:
        await call.finish(*outcome)


async def _guarded(work: Awaitable[None]) -> tuple[StatusCode, str] | None:
    """Run a method body; the status it failed with (None: it answered, or the client left).

    Errors are caught here, inside the nursery, so they never arrive wrapped in a group."""
    try:
        await work
    except GrpcError as error:
        return error.code, error.message
    except DomainError as error:
        status = status_for_error(error)
        return status.code, status.message
    except ClientGone:
        return None
    return None


async def _read_request(raw: RawRequest, method: Method, body_timeout: float) -> Message:
    try:
        data = await raw.read_body(MAX_REQUEST_BYTES, body_timeout)
    except Exception as error:
        if isinstance(error, ClientGone):
            raise
        raise GrpcError(
            StatusCode.RESOURCE_EXHAUSTED, "The request is too large or too slow."
        ) from None
    decoder = MessageDecoder(max_message=MAX_REQUEST_BYTES)
    messages = decoder.feed(data)
    decoder.finish()
    if len(messages) != 1:
        raise GrpcError(StatusCode.INTERNAL, f"A request carries one message, not {len(messages)}.")
    try:
        return method.request.FromString(messages[0])
    except DecodeError:
        raise GrpcError(StatusCode.INVALID_ARGUMENT, "The request message is not valid.") from None
