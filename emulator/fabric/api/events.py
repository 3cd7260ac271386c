"""`/v1/events/stream`: every event in the organizations the caller can see, as SSE.

No replay unless `Last-Event-ID` names a retained event (then everything after it); the
stream never closes by itself. With an API key, only the key's organization. The WebSocket
mirror `/v1/events/ws` lives in `websocket.py`.
Imports the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from ..core.auth import Caller
from ..core.events import DomainEvent
from ..core.plane import ControlPlane
from ..engine import EventFilter
from .envelope import Call
from .routes import ANY_KEY, FabricApi, Route, drain
from .streams import stream_events


def visible_orgs(plane: ControlPlane, caller: Caller) -> frozenset[str]:
    """The orgs visible now; memberships gained later need a reconnect."""
    return frozenset(plane.visible_orgs(caller))


def visible_filter(plane: ControlPlane, caller: Caller, include_internal: bool) -> EventFilter:
    """Events of the orgs visible now; memberships gained later need a reconnect."""
    orgs = visible_orgs(plane, caller)

    def accepts(event: DomainEvent) -> bool:
        return event.organization_id in orgs and (include_internal or not event.internal)

    return accepts


def routes(api: FabricApi) -> list[Route]:
    async def stream(call: Call) -> None:
        await drain(call)
        include = call.query().get("include_internal", "").lower() == "true"
        caller = call.principal()
        accepts = visible_filter(api.plane, caller, include)
        # Streams with the same organizations and the same `include_internal` see the same
        # events: they share one feed of encoded frames.
        audience = ("events", visible_orgs(api.plane, caller), include)
        await stream_events(api, call, accepts, replay=False, audience=audience)

    return [Route("GET", "/v1/events/stream", stream, ANY_KEY, summary="All events (SSE)")]
