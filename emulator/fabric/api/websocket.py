"""`/v1/events/ws`: the WebSocket mirror of `/v1/events/stream`, as a raw WebSocket route.

Each domain event is one JSON text message (the same object as an SSE `data:` line, encoded
once for every subscriber: `streams.event_text`), with the same visibility and
`include_internal` rules and no replay. Credentials come from the handshake headers
(`Authorization` or `X-Principal-Id`); a refused handshake is a real HTTP answer, the
envelope with 401 (the platform's `RawWebSocket.reject`). A subscriber that falls behind is
closed with 4008 and the reason `overflow; reconnect with Last-Event-ID: <id>` (resume on the
SSE stream); when the service stops, 1001. Messages from the client are ignored.
Imports trio, the generic WebSocket route and the Fabric core; nothing from quart or yaml.
"""

from __future__ import annotations

import attrs
import trio

from ...web.rawasgi import RawRequest, RawRoute
from ...web.websocket import GOING_AWAY, RawWebSocket, WebSocketDisconnect, websocket_route
from ..core.errors import FabricError
from .envelope import error_answer
from .events import visible_filter
from .routes import FabricApi
from .streams import event_text

OVERFLOW_CLOSE = 4008


def websocket_routes(api: FabricApi) -> list[RawRoute]:
    async def events_ws(socket: RawWebSocket) -> None:
        try:
            caller = api.plane.authenticate(
                socket.header(b"authorization"), socket.header(b"x-principal-id"), public=False
            )
        except FabricError as error:
            answer = error_answer(error)
            assert answer is not None  # every FabricError has an answer
            family = socket.request.family
            await socket.reject(family.error(answer.status, answer.code, answer.message))
            return
        assert caller is not None  # the route is not public
        query = bytes(socket.request.scope.get("query_string", b"")).decode("latin-1")
        include = "include_internal=true" in query.lower()
        accepts = visible_filter(api.plane, caller, include)
        with api.engine.hub.subscribe(accepts, api.plane.events.last_sequence) as sub:
            await socket.accept()
            last_sent = ""
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    await socket.wait_disconnect()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                try:
                    while True:
                        for event in await sub.receive_batch():
                            await socket.send_text(event_text(api, event))
                            last_sent = event.id
                except trio.EndOfChannel:
                    pass  # overflow or shutdown: said below
                except WebSocketDisconnect:
                    pass  # the client is gone; socket.closed says so
                nursery.cancel_scope.cancel()
            if socket.closed:
                return
            if sub.overflowed:
                reason = f"overflow; reconnect with Last-Event-ID: {last_sent}"
                await socket.close(OVERFLOW_CLOSE, reason)
            else:
                await socket.close(GOING_AWAY, "the emulator is stopping")

    route = websocket_route("/v1/events/ws", events_ws, "All events (WebSocket)")

    async def handshake_only(request: RawRequest) -> None:
        # A plain HTTP request spelled with the WEBSOCKET method reaches the route too; it
        # gets a clear 426 instead of no answer at all.
        if request.scope["type"] != "websocket":
            await trio.lowlevel.checkpoint()
            raise request.family.error(
                426, "upgrade_required", "this route needs a WebSocket handshake"
            )
        await route.handler(request)

    return [attrs.evolve(route, handler=handshake_only)]
