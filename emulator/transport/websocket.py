"""WebSocket connections served by the emulator's own HTTP/1.1 server: wsproto on trio, calling
the ASGI app with a `websocket` scope.

Owns one upgraded connection from the request head on: the handshake (wsproto checks it; a
broken one is refused with its 400/426 before the app runs), the ASGI websocket exchange
(`websocket.connect`, `accept`, `receive`, `send`, `close`, `disconnect`, and the
`websocket.http.response` extension, so an app can refuse with a real HTTP answer), one reader
task that answers pings and close frames while the app is busy elsewhere, the close handshake
both ways, and shutdown (`going_away`: close code 1001).

Bounds: a message larger than `max_message_bytes` (counted while its frames arrive, never
buffered whole) closes the connection with 1009; at most `queue_messages` received messages wait
for the app, after which the reader stops reading, so a client that sends faster than the app
receives is held back by TCP (its pings then wait too). After a close frame the peer has
`close_timeout` seconds to answer before the socket is closed anyway. With `ping_interval` set,
the server pings, and a peer that leaves a ping unanswered for an interval counts as gone.

Generic: knows nothing about any service; imports neither quart nor hypercorn. Called by
emulator.transport.h1, which owns the socket before the upgrade and closes it after `run`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from typing import Any

import attrs
import trio
import wsproto
import wsproto.events as ws_events
from wsproto.connection import ConnectionState
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..asgi import ASGIApp

log = logging.getLogger("emulator.websocket")

READ_SIZE = 64 * 1024


@attrs.frozen
class WebSocketLimits:
    max_message_bytes: int = 1024 * 1024
    queue_messages: int = 16
    close_timeout: float = 5.0
    # With a number: a ping every `ping_interval` seconds while open, and a peer that has not
    # answered the previous one by then counts as gone (1006). Off by default, as in Hypercorn;
    # clients (browsers, `websockets`) usually ping themselves.
    ping_interval: float | None = None


class WebSocketClosed(OSError):
    """`websocket.send` on a connection that is closed or closing (ASGI asks for an OSError)."""


def is_upgrade(method: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an HTTP/1.1 request asks to become a WebSocket (`Upgrade: websocket`)."""
    if method != b"GET":
        return False
    for name, value in headers:
        if name.lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class Phase(enum.Enum):
    CONNECTING = "connecting"  # the app has not accepted or refused yet
    RESPONDING = "responding"  # the app is sending a denial response (HTTP)
    OPEN = "open"
    CLOSING = "closing"  # our close frame is out; waiting for the peer's
    CLOSED = "closed"


_PHASES: dict[Phase, frozenset[Phase]] = {
    Phase.CONNECTING: frozenset((Phase.RESPONDING, Phase.OPEN, Phase.CLOSED)),
    Phase.RESPONDING: frozenset((Phase.CLOSED,)),
    Phase.OPEN: frozenset((Phase.CLOSING, Phase.CLOSED)),
    Phase.CLOSING: frozenset((Phase.CLOSED,)),
    Phase.CLOSED: frozenset(),
}


class WebSocketSession:
    """One upgraded connection and its ASGI exchange."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        scope: dict[str, Any],
        limits: WebSocketLimits,
    ) -> None:
        self.stream = stream
        self.scope = scope
        self.limits = limits
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.phase = Phase.CONNECTING
        # Why the connection closed, for `websocket.disconnect`.
        self.close_code = int(CloseReason.ABNORMAL_CLOSURE)
        self.close_reason = ""
        self._connect_delivered = False
        self._incoming_send, self._incoming = trio.open_memory_channel[dict[str, Any]](
            limits.queue_messages
        )
        self._write_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._closed = trio.Event()
        self._going_away = False
        self._trailing = b""
        # The payload of the last ping we sent until its pong arrives (see `_ping_loop`).
        self._awaiting_pong: bytes | None = None
        self._pings = 0
        self._read_scope = trio.CancelScope()

    def _enter(self, phase: Phase) -> None:
        if phase is self.phase:
            return
        if phase not in _PHASES[self.phase]:
            raise RuntimeError(f"websocket: {self.phase.value} cannot become {phase.value}")
        self.phase = phase
        if phase is Phase.CLOSED:
            self._incoming_send.close()
            self._closed.set()

    # The handshake and the app ------------------------------------------------------------------

    async def run(
        self, app: ASGIApp, target: bytes, headers: list[tuple[bytes, bytes]], trailing: bytes
    ) -> None:
        """Check the handshake, run the app, close. `trailing` holds bytes that arrived after
        the request head (the client's first frames, possibly)."""
        try:
            self.ws.initiate_upgrade_connection(headers, target)
            request = next(iter(self.ws.events()))
        except RemoteProtocolError as error:
            hint = error.event_hint
            rejection = hint if isinstance(hint, ws_events.RejectConnection) else None
            await self._write(self.ws.send(rejection or ws_events.RejectConnection()))
            return
        assert isinstance(request, ws_events.Request)
        self.scope["subprotocols"] = list(request.subprotocols)
        self._trailing = trailing
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            failed = False
            try:
                await app(self.scope, self.receive, self.send)
            except WebSocketClosed:
                pass
            except Exception as error:
                log.error("unhandled error on websocket %s", self.scope["path"], exc_info=error)
                failed = True
            # Nobody takes received messages any more: the reader drops them from now on.
            self._incoming.close()
            with contextlib.suppress(WebSocketClosed):
                await self._finish(failed)
            nursery.cancel_scope.cancel()

    async def _finish(self, failed: bool) -> None:
        """After the app: answer a handshake it left open, close an open connection, wait
        (bounded) for the peer's close frame."""
        if self.phase is Phase.CONNECTING:
            status = 500 if failed else 403
            await self._write(self.ws.send(ws_events.RejectConnection(status_code=status)))
            self._enter(Phase.CLOSED)
        elif self.phase is Phase.RESPONDING:
            self._enter(Phase.CLOSED)
        elif self.phase is Phase.OPEN:
            code = CloseReason.INTERNAL_ERROR if failed else CloseReason.NORMAL_CLOSURE
            await self._send_close(int(code), "")
        if self.phase is Phase.CLOSING:
            with trio.move_on_after(self.limits.close_timeout):
                await self._closed.wait()

    def going_away(self) -> None:
        """The server is shutting down: close with 1001 (the app sees the disconnect)."""
        self._going_away = True
        if self.phase is Phase.OPEN and self._nursery is not None:
            self._nursery.start_soon(self._close_going_away)

    async def _close_going_away(self) -> None:
        with contextlib.suppress(WebSocketClosed):
            await self._send_close(int(CloseReason.GOING_AWAY), "server shutting down")

    # ASGI receive ---------------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self._connect_delivered:
            self._connect_delivered = True
            await trio.lowlevel.checkpoint()
            return {"type": "websocket.connect"}
        try:
            return await self._incoming.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {
                "type": "websocket.disconnect",
                "code": self.close_code,
                "reason": self.close_reason,
            }

    # ASGI send ------------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        phase = self.phase
        if kind == "websocket.accept" and phase is Phase.CONNECTING:
            await self._accept(message)
        elif kind == "websocket.close" and phase is Phase.CONNECTING:
            # Refused before the handshake: ASGI says 403.
            self.close_code = int(message.get("code") or CloseReason.NORMAL_CLOSURE)
            await self._write(self.ws.send(ws_events.RejectConnection(status_code=403)))
            self._enter(Phase.CLOSED)
        elif kind == "websocket.http.response.start" and phase is Phase.CONNECTING:
            headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
            event = ws_events.RejectConnection(
                status_code=int(message["status"]), headers=headers, has_body=True
            )
            self._enter(Phase.RESPONDING)
            await self._write(self.ws.send(event))
        elif kind == "websocket.http.response.body" and phase is Phase.RESPONDING:
            more = bool(message.get("more_body", False))
            data = bytes(message.get("body", b""))
            await self._write(self.ws.send(ws_events.RejectData(data, body_finished=not more)))
            if not more:
                self._enter(Phase.CLOSED)
        elif kind == "websocket.send" and phase is Phase.OPEN:
            await self._send_message(message)
        elif kind == "websocket.close" and phase is Phase.OPEN:
            await self._send_close(
                int(message.get("code") or CloseReason.NORMAL_CLOSURE),
                str(message.get("reason") or ""),
            )
        elif kind in ("websocket.send", "websocket.close") and phase in (
            Phase.CLOSING,
            Phase.CLOSED,
        ):
            if kind == "websocket.send":
                raise WebSocketClosed(f"the websocket is {phase.value}")
            await trio.lowlevel.checkpoint()
        else:
            raise RuntimeError(f"{kind} cannot be sent while the websocket is {phase.value}")

    async def _accept(self, message: dict[str, Any]) -> None:
        headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", ())]
        subprotocol = message.get("subprotocol")
        event = ws_events.AcceptConnection(subprotocol=subprotocol, extra_headers=headers)
        self._enter(Phase.OPEN)
        await self._write(self.ws.send(event))
        assert self._nursery is not None
        self._nursery.start_soon(self._read)
        if self.limits.ping_interval is not None:
            self._nursery.start_soon(self._ping_loop, self.limits.ping_interval)
        if self._going_away:
            await self._send_close(int(CloseReason.GOING_AWAY), "server shutting down")

    async def _send_message(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is not None:
            event: ws_events.Event = ws_events.TextMessage(data=str(text))
        else:
            event = ws_events.BytesMessage(data=bytes(message.get("bytes") or b""))
        await self._write(self.ws.send(event))

    async def _send_close(self, code: int, reason: str) -> None:
        """Our close frame, if the connection is still open."""
        if self.phase is not Phase.OPEN:
            await trio.lowlevel.checkpoint()
            return
        self.close_code = code
        self.close_reason = reason
        self._enter(Phase.CLOSING)
        await self._write(self.ws.send(ws_events.CloseConnection(code=code, reason=reason)))

    async def _write(self, data: bytes) -> None:
        if not data:
            await trio.lowlevel.checkpoint()
            return
        async with self._write_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                self._lost()
                raise WebSocketClosed("the connection is gone") from error

    def _lost(self) -> None:
        """The connection is gone without a close handshake: 1006 for the app."""
        if self.phase is not Phase.CLOSED:
            self.close_code = int(CloseReason.ABNORMAL_CLOSURE)
            self._enter(Phase.CLOSED)

    async def _ping_loop(self, interval: float) -> None:
        """Ping while open; end the connection when a ping is still unanswered at the next."""
        while True:
            await trio.sleep(interval)
            if self.phase is not Phase.OPEN:
                return
            if self._awaiting_pong is not None:
                log.info(
                    "websocket %s: no pong within %.1f s; closing", self.scope["path"], interval
                )
                self._lost()
                self._read_scope.cancel()
                return
            self._pings += 1
            self._awaiting_pong = self._pings.to_bytes(4, "big")
            with contextlib.suppress(WebSocketClosed):
                await self._write(self.ws.send(ws_events.Ping(self._awaiting_pong)))

    # The reader -----------------------------------------------------------------------------------

    async def _read(self) -> None:
        """Feed wsproto until the connection closes; messages go to the app's queue."""
        data: bytes | None = self._trailing
        self._trailing = b""
        with self._read_scope:
            await self._read_frames(data)

    async def _read_frames(self, data: bytes | None) -> None:
        parts: list[str | bytes] = []
        size = 0
        try:
            while self.phase in (Phase.OPEN, Phase.CLOSING):
                if data is None or data:
                    self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, ws_events.Message):
                        if self.phase is not Phase.OPEN:
                            continue
                        piece = event.data
                        parts.append(piece if isinstance(piece, str) else bytes(piece))
                        size += len(piece)
                        if size > self.limits.max_message_bytes:
                            parts, size = [], 0
                            await self._send_close(int(CloseReason.MESSAGE_TOO_BIG), "")
                            continue
                        if event.message_finished:
                            with contextlib.suppress(
                                trio.BrokenResourceError, trio.ClosedResourceError
                            ):
                                await self._incoming_send.send(_message(parts))
                            parts, size = [], 0
                    elif isinstance(event, ws_events.Ping):
                        if self.ws.state is ConnectionState.OPEN:
                            await self._write(self.ws.send(event.response()))
                    elif isinstance(event, ws_events.Pong):
                        if event.payload == self._awaiting_pong:
                            self._awaiting_pong = None
                    elif isinstance(event, ws_events.CloseConnection):
                        await self._peer_closed(event)
                        return
                if data is None:
                    return
                try:
                    data = bytes(await self.stream.receive_some(READ_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    # The peer is gone without a close frame: wsproto reports 1006.
                    data = None
        except (WebSocketClosed, LocalProtocolError):
            self._lost()
        finally:
            if self.phase is not Phase.CLOSED:
                self._lost()

    async def _peer_closed(self, event: ws_events.CloseConnection) -> None:
        if self.phase is Phase.OPEN:
            self.close_code = int(event.code)
            self.close_reason = event.reason or ""
        state = self.ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer closed first: echo its close frame.
            await self._write(self.ws.send(event.response()))
        elif state is ConnectionState.OPEN:
            # wsproto found a broken frame (its close code says which rule): say so, stop.
            await self._write(self.ws.send(event))
        self._enter(Phase.CLOSED)


def _message(parts: list[str | bytes]) -> dict[str, Any]:
    if parts and isinstance(parts[0], str):
        return {"type": "websocket.receive", "text": "".join(str(part) for part in parts)}
    return {
        "type": "websocket.receive",
        "bytes": b"".join(part for part in parts if isinstance(part, bytes)),
    }
