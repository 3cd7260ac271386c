"""Raw WebSocket routes: the WebSocket counterpart of emulator.web.rawasgi's raw HTTP routes.

Owns `websocket_route` (a `RawRoute` with the method `WEBSOCKET`, so it merges with a
service's other raw routes and `RawDispatcher` sends the ASGI `websocket` scopes for its path
to it) and `RawWebSocket`, what a handler gets: the path parameters, the headers, the offered
subprotocols, accept / reject / receive / send / close, and `WebSocketDisconnect` once the
client has gone.

Errors: an `ApiError` raised before `accept` becomes a real HTTP answer in its family (status,
JSON body) where the server offers the ASGI `websocket.http.response` extension (both the
emulator's own server and Hypercorn do), else a 403; after `accept` it closes the connection
with 1008 and the error's description as the reason. Anything else is logged and closes with
1011 (or a 500 before `accept`).

Works the same on the emulator's own HTTP/1.1 server (emulator.transport.websocket) and on
Hypercorn. Generic: knows nothing about any service; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from ..asgi import Message
from ..platform.errors import ApiError, framework_error
from .rawasgi import WEBSOCKET, RawRequest, RawRoute

log = logging.getLogger("emulator.websocket")

DENIAL_EXTENSION = "websocket.http.response"
# Close codes (RFC 6455, section 7.4.1).
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
ABNORMAL_CLOSURE = 1006
POLICY_VIOLATION = 1008
INTERNAL_ERROR = 1011
# A close reason must fit a control frame (125 bytes, 2 of them the code).
MAX_REASON_BYTES = 123

WebSocketHandler = Callable[["RawWebSocket"], Awaitable[None]]


class WebSocketDisconnect(Exception):
    """The connection is closed (by the client, or after our close); `code` says how."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"websocket closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class RawWebSocket:
    """One WebSocket connection served by a raw route."""

    def __init__(self, request: RawRequest) -> None:
        self.request = request
        self.accepted = False
        self.closed = False
        # How the connection ended, once known (our own close, or the disconnect message).
        self._ending: WebSocketDisconnect | None = None
        self._receive = request.asgi_receive
        self._send = request.asgi_send

    @property
    def scope(self) -> dict[str, Any]:
        return dict(self.request.scope)

    @property
    def params(self) -> dict[str, str]:
        return self.request.params

    @property
    def path(self) -> str:
        return self.request.path

    @property
    def subprotocols(self) -> list[str]:
        return [str(name) for name in self.request.scope.get("subprotocols", ())]

    def header(self, name: bytes) -> str | None:
        return self.request.header(name)

    async def _transmit(self, message: Message) -> None:
        try:
            await self._send(message)
        except trio.Cancelled:
            raise
        except Exception as error:
            # Servers raise (an OSError, by the ASGI spec) once the connection is gone.
            self.closed = True
            gone = WebSocketDisconnect(ABNORMAL_CLOSURE, f"could not send: {error!r}")
            self._ending = self._ending or gone
            raise gone from error

    async def accept(
        self, subprotocol: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        if self.accepted:
            raise RuntimeError("the websocket is already accepted")
        self.accepted = True
        await self._transmit(
            {"type": "websocket.accept", "subprotocol": subprotocol, "headers": list(headers)}
        )

    async def reject(self, error: ApiError) -> None:
        """Refuse the connection with an HTTP answer: `error` in its family where the server
        can send one, else a bare 403."""
        if self.accepted or self.closed:
            raise RuntimeError("only a websocket not yet accepted can be rejected")
        self.closed = True
        self._ending = WebSocketDisconnect(POLICY_VIOLATION, error.description)
        extensions = self.request.scope.get("extensions") or {}
        if DENIAL_EXTENSION not in extensions:
            await self._transmit({"type": "websocket.close", "code": POLICY_VIOLATION})
            return
        body = json.dumps(error.body(), separators=(",", ":")).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in error.headers.items()
            ),
        ]
        await self._transmit(
            {"type": "websocket.http.response.start", "status": error.status, "headers": headers}
        )
        await self._transmit({"type": "websocket.http.response.body", "body": body})

    async def receive(self) -> str | bytes:
        """The next message (text as str, binary as bytes); raises WebSocketDisconnect."""
        if self._ending is not None:
            # Closed already (after our own close, the servers differ in what they deliver).
            await trio.lowlevel.checkpoint()
            raise WebSocketDisconnect(self._ending.code, self._ending.reason)
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                return str(text)
            return bytes(message.get("bytes") or b"")
        self.closed = True
        if kind == "websocket.disconnect":
            self._ending = WebSocketDisconnect(
                int(message.get("code", ABNORMAL_CLOSURE)), str(message.get("reason") or "")
            )
        else:
            self._ending = WebSocketDisconnect(ABNORMAL_CLOSURE, f"unexpected {kind}")
        raise WebSocketDisconnect(self._ending.code, self._ending.reason)

    async def receive_json(self) -> Any:
        """The next message parsed as JSON; a message that is not JSON closes with 1007."""
        data = await self.receive()
        try:
            return json.loads(data)
        except ValueError:
            await self.close(1007, "a message is not JSON")
            raise WebSocketDisconnect(1007, "a message is not JSON") from None

    async def wait_disconnect(self) -> int:
        """Drop incoming messages until the connection closes; its close code. For handlers
        that only send, run beside the sending loop to notice the client leaving."""
        while True:
            try:
                await self.receive()
            except WebSocketDisconnect as gone:
                return gone.code

    async def send_text(self, text: str) -> None:
        await self._transmit({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._transmit({"type": "websocket.send", "bytes": data})

    async def send_json(self, data: Any) -> None:
        await self.send_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> None:
        if self.closed:
            await trio.lowlevel.checkpoint()
            return
        self.closed = True
        reason = reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")
        self._ending = WebSocketDisconnect(code, reason)
        await self._transmit({"type": "websocket.close", "code": code, "reason": reason})


def websocket_route(pattern: str, handler: WebSocketHandler, summary: str = "") -> RawRoute:
    """A raw route serving WebSocket connections at `pattern` (with `{name}` segments)."""

    async def serve(request: RawRequest) -> None:
        socket = RawWebSocket(request)
        message = await socket._receive()
        if message["type"] != "websocket.connect":
            return
        try:
            await handler(socket)
            if socket.accepted and not socket.closed:
                # Said here, not left to the server: Hypercorn would close with 1011.
                await socket.close()
        except WebSocketDisconnect:
            pass
        except ApiError as error:
            await _refuse(socket, error, POLICY_VIOLATION)
        except Exception as error:
            log.error("unhandled error on websocket %s", request.path, exc_info=error)
            failure = framework_error(request.family, 500, request.path, WEBSOCKET)
            await _refuse(socket, failure, INTERNAL_ERROR)

    return RawRoute(WEBSOCKET, pattern, serve, summary)


async def _refuse(socket: RawWebSocket, error: ApiError, code: int) -> None:
    try:
        if not socket.accepted and not socket.closed:
            await socket.reject(error)
        elif not socket.closed:
            await socket.close(code, error.description)
    except WebSocketDisconnect:
        pass
