"""`/v1/events/ws`: the WebSocket mirror of `/v1/events/stream`.

Each domain event is one JSON text message (the same object as an SSE `data:` line), with the
same visibility and `include_internal` rules and no replay. Credentials come from the handshake
headers (`Authorization` or `X-Principal-Id`). A refused handshake is accepted and closed at
once with code 4401 (unauthorized) or 4403 (forbidden) and the reason, because not every
server can answer a WebSocket handshake with an HTTP error. A subscriber that falls behind is
closed with 4008 and the reason `overflow; reconnect with Last-Event-ID: <id>` (resume on the
SSE stream). Served through a Quart blueprint, the only route that needs Quart.
"""

from __future__ import annotations

import json

from quart import Blueprint, websocket

from ..core.errors import FabricError, Forbidden
from . import serialize
from .events import visible_filter
from .routes import FabricApi

UNAUTHORIZED_CLOSE = 4401
FORBIDDEN_CLOSE = 4403
OVERFLOW_CLOSE = 4008
GOING_AWAY_CLOSE = 1001


def websocket_blueprint(api: FabricApi) -> Blueprint:
    blueprint = Blueprint("fabric_events_ws", __name__)

    @blueprint.websocket("/v1/events/ws", strict_slashes=False)
    async def events_ws() -> None:
        headers = websocket.headers
        try:
            caller = api.plane.authenticate(
                headers.get("authorization"), headers.get("x-principal-id"), public=False
            )
            assert caller is not None  # the route is not public
        except FabricError as error:
            await websocket.accept()
            code = FORBIDDEN_CLOSE if isinstance(error, Forbidden) else UNAUTHORIZED_CLOSE
            await websocket.close(code, error.message)
            return
        include = websocket.args.get("include_internal", "").lower() == "true"
        accepts = visible_filter(api.plane, caller, include)
        await websocket.accept()
        last_sent = ""
        with api.engine.hub.subscribe(accepts, api.plane.events.last_sequence) as sub:
            async for event in sub.receive:
                await websocket.send(json.dumps(serialize.event(event), separators=(",", ":")))
                last_sent = event.id
            if sub.overflowed:
                await websocket.close(
                    OVERFLOW_CLOSE, f"overflow; reconnect with Last-Event-ID: {last_sent}"
                )
                return
        # The hub closed every stream: the service is stopping.
        await websocket.close(GOING_AWAY_CLOSE, "the emulator is stopping")

    return blueprint
