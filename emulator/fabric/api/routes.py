"""The Fabric route table and the one wrapper every route runs in.

Owns `FabricApi` (what handlers share: the control plane, the engine, the clock, the id factory,
stream settings, readiness, the asset directory of `--state-file`), `Route` (method, path
pattern, handler, the API-key scope it needs, whether it is public) and `to_raw_routes`, which
wraps each handler once: a request id, the auth chain, the scope check, then the handler, and
every error it raises translated once into the envelope (`envelope.error_answer`); an
unexpected exception is logged and answered as a 500 envelope, never a bare 500. Also the JSON
body reader (an empty body means no body).
Imports the generic raw-ASGI types; nothing from quart or yaml.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from ...platform.clock import Clock
from ...web.rawasgi import ClientGone, RawRequest, RawRoute
from ..assetfiles import AssetFiles
from ..core.auth import require_scope
from ..core.errors import BadRequest, ValidationFailed
from ..core.plane import ControlPlane
from ..engine import Engine
from .envelope import Answer, Call, ErrorAnswer, error_answer, new_call, send_answer, send_error

log = logging.getLogger("emulator.fabric")

# A route any API key may use, whatever its scopes.
ANY_KEY = "*"
MAX_JSON_BODY = 1024 * 1024
# Encoded frames kept for streams that are a little behind; older ones are encoded again.
FRAME_CACHE = 8192
BODY_SECONDS = 30.0

Handler = Callable[[Call], Awaitable[Answer | None]]


@attrs.define
class FabricApi:
    plane: ControlPlane
    engine: Engine
    clock: Clock
    new_id: Callable[[], str]
    keepalive_seconds: float = 15.0
    ready: bool = False
    # Encoded SSE frames by event id, shared by every stream (streams.event_frame); bounded.
    frames: OrderedDict[str, bytes] = attrs.field(factory=OrderedDict)
    # Where uploaded bytes are kept across restarts (with --state-file), else None.
    asset_files: AssetFiles | None = None


@attrs.frozen
class Route:
    method: str
    pattern: str
    handler: Handler
    # ANY_KEY, a scope name, or None (full-access keys only); see docs/fabric/routes.md.
    scope: str | None = None
    public: bool = False
    summary: str = ""


async def read_json(call: Call) -> dict[str, Any]:
    """The body as a JSON object; empty means `{}` (the client sends a JSON content type on
    body-less POSTs)."""
    body = await call.raw.read_body(MAX_JSON_BODY, BODY_SECONDS)
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationFailed("the request body must be a JSON object")
    return value


async def drain(call: Call) -> None:
    """Read (and ignore) a body on routes that take none, so disconnects can be noticed."""
    await call.raw.read_body(MAX_JSON_BODY, BODY_SECONDS)


def _wrap(api: FabricApi, route: Route) -> Callable[[RawRequest], Awaitable[None]]:
    async def handle(raw: RawRequest) -> None:
        call = new_call(raw, api.clock.now(), api.new_id)
        try:
            call.caller = api.plane.authenticate(
                raw.header(b"authorization"), raw.header(b"x-principal-id"), public=route.public
            )
            if call.caller is not None:
                call.caller = attrs.evolve(call.caller, request_id=call.request_id)
                if call.caller.key_org is not None:
                    call.organization_id = call.caller.key_org
                # A public route needs no scope: a key can do what no key can.
                if route.scope != ANY_KEY and not route.public:
                    require_scope(call.caller, route.scope)
            answer = await route.handler(call)
            if answer is not None:
                await send_answer(call, answer)
        except ClientGone:
            raise
        except Exception as error:
            translated = error_answer(error)
            if translated is None:
                log.error("unhandled error on %s %s", raw.method, raw.path, exc_info=error)
                translated = ErrorAnswer(500, "internal_error", "the emulator failed; see its log")
            if raw.started:
                return  # a stream already started; it ends here
            await send_error(call, translated)

    return handle


def to_raw_routes(api: FabricApi, routes: Iterable[Route]) -> list[RawRoute]:
    return [
        RawRoute(route.method, route.pattern, _wrap(api, route), summary=route.summary)
        for route in routes
    ]


def page_links(path: str, query: Mapping[str, str], next_cursor: str | None) -> dict[str, Any]:
    from urllib.parse import urlencode

    current = urlencode(query)
    nxt = None
    if next_cursor is not None:
        nxt = f"{path}?{urlencode({**query, 'cursor': next_cursor})}"
    return {"self": f"{path}?{current}" if current else path, "next": nxt}
