"""The object graph of one emulator and the Quart-Trio app that serves it.

Owns `Emulator` (settings, seed, clock, endpoints and the running services), `build_emulator`
and `create_app`, which registers every service's blueprints plus the emulator's own
`/_emulate` routes, and renders every error in one place. There is no module-level app or
state: each call builds a fresh graph, so every test gets its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..platform.clock import Clock, Randomness, SystemClock
from ..platform.errors import ApiError, FamilyMap, framework_error
from ..platform.seeds import Seed
from ..platform.service import Endpoints, Service, ServiceContext, ServiceInstance
from ..platform.settings import Settings
from .control import control_blueprint
from .http import error_response
from .rawasgi import RawDispatcher, merge_routes
from .requestlog import ASGIApp, RequestLog

log = logging.getLogger("emulator.app")


def default_services() -> tuple[Service, ...]:
    from ..foundry.service import FoundryService

    return (FoundryService(),)


@attrs.define
class Emulator:
    """Everything one running emulator owns."""

    settings: Settings
    seed: Seed
    clock: Clock
    endpoints: Endpoints
    services: dict[str, ServiceInstance]
    families: FamilyMap
    request_log: RequestLog = attrs.field(factory=RequestLog)
    started_at: float = attrs.field(factory=time.monotonic)

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def raw_routes(self) -> list[tuple[str, tuple[str, ...], str]]:
        """Routes served in front of Quart as (rule, methods, summary), for the OpenAPI document."""
        routes: list[tuple[str, tuple[str, ...], str]] = []
        for service in self.services.values():
            describe = getattr(service, "openapi_routes", None)
            if describe is not None:
                routes.extend(describe())
        return routes

    def begin_shutdown(self) -> None:
        for service in self.services.values():
            service.begin_shutdown()


def build_emulator(
    settings: Settings,
    seed: Seed,
    *,
    services: Sequence[Service] | None = None,
    clock: Clock | None = None,
    randomness: Randomness | None = None,
) -> Emulator:
    services = default_services() if services is None else tuple(services)
    context = ServiceContext(
        settings=settings,
        clock=clock or SystemClock(),
        randomness=randomness or Randomness(),
        endpoints=Endpoints(),
    )
    instances: dict[str, ServiceInstance] = {}
    families = FamilyMap()
    for service in services:
        instance = service.start(seed.blocks.get(service.key), context)
        instances[service.key] = instance
        for prefix, family in instance.error_families():
            families = families.with_prefix(prefix, family)
    return Emulator(
        settings=settings,
        seed=seed,
        clock=context.clock,
        endpoints=context.endpoints,
        services=instances,
        families=families,
        request_log=RequestLog(settings.request_log_size, access_log=settings.access_log),
    )


def create_asgi(emulator: Emulator) -> ASGIApp:
    """The ASGI app the server runs: the request log around the services' raw routes
    (emulator.web.rawasgi), which sit in front of `create_app`'s Quart app."""
    groups = []
    for service in emulator.services.values():
        routes = getattr(service, "asgi_routes", None)
        if routes is not None:
            groups.append(routes())
    dispatcher = RawDispatcher(
        create_app(emulator),
        merge_routes(groups),
        emulator.families,
        body_limit=emulator.settings.max_body_bytes,
    )
    app: ASGIApp = dispatcher
    request_log = emulator.request_log
    if request_log.capacity or request_log.access_log:
        app = request_log.middleware(dispatcher, emulator.families)
    return limit_request_head(app, emulator.settings.max_header_bytes, emulator.families)


def limit_request_head(app: ASGIApp, max_bytes: int, families: FamilyMap) -> ASGIApp:
    """Answer 431 when the path, query and headers together exceed `max_bytes`.

    Hypercorn enforces its own limit only on a request head that arrives in pieces; one that
    arrives in a single read is let through, so the emulator checks every request here.
    """

    async def limited(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            for name, value in scope["headers"]:
                size += len(name) + len(value)
            if size > max_bytes:
                path = str(scope.get("path", ""))
                error = framework_error(families.for_path(path), 431, path, scope.get("method", ""))
                body = json.dumps(error.body()).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 431,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return limited


def create_app(emulator: Emulator) -> QuartTrio:
    app = QuartTrio("emulator")
    # Quart's defaults cut long-polls and long streams; the emulator enforces its own time
    # limits per route instead (emulator.web.http). The body Quart holds unread is bounded by
    # the largest body a route accepts (and the dispatcher stops reading past it, see
    # emulator.web.rawasgi.bounded_receive): with no bound, a client that keeps sending to a
    # route that never reads grew the process by 220 MiB a second (issue 16, defect 1).
    app.config.update(
        MAX_CONTENT_LENGTH=emulator.settings.max_body_bytes,
        BODY_TIMEOUT=None,
        RESPONSE_TIMEOUT=None,
    )
    app.extensions["emulator"] = emulator
    app.register_blueprint(control_blueprint(emulator))
    for service in emulator.services.values():
        for blueprint in service.blueprints():
            app.register_blueprint(blueprint)

    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        family = emulator.families.for_path(request.path)
        api_error = framework_error(family, error.code or 500, request.path, request.method)
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            api_error.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return error_response(api_error)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        family = emulator.families.for_path(request.path)
        return error_response(framework_error(family, 500, request.path, request.method))

    return app
