"""The object graph of one emulator and the ASGI app each of its services is served by.

Owns `Emulator` (settings, seed, clock and one `Site` per running service), `build_emulator`,
`create_asgi` and `create_app`: per service, a Quart-Trio app with the service's blueprints and
the emulator's `/_emulate` routes scoped to that service, behind the service's raw routes, its
request log and the request-head limit; errors are rendered in one place, in the family of the
path. There is no module-level app or state: each call builds a fresh graph, so every test gets
its own. Knows services only through the contract (emulator.platform.service) and the registry.
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

from .. import services as registry
from ..asgi import ASGIApp
from ..platform.clock import Clock, Randomness, SystemClock
from ..platform.errors import EMULATOR, ApiError, FamilyMap, framework_error
from ..platform.seeds import Seed
from ..platform.service import Endpoints, Service, ServiceContext, ServiceInstance
from ..platform.settings import Settings, SettingsError
from ..platform.statefile import load_state, restore
from .control import CONTROL_PREFIX, control_blueprint
from .http import error_response
from .rawasgi import RawDispatcher, merge_routes
from .requestlog import RequestLog

log = logging.getLogger("emulator.app")


@attrs.define
class Site:
    """One running service as the emulator serves it: its instance, its own listeners'
    endpoints, the error family of each of its paths and its request log."""

    service: Service
    instance: ServiceInstance
    endpoints: Endpoints
    families: FamilyMap
    request_log: RequestLog

    @property
    def name(self) -> str:
        return self.service.name

    def raw_routes(self) -> list[tuple[str, tuple[str, ...], str]]:
        """Routes served in front of Quart as (rule, methods, summary), for the OpenAPI document."""
        return [(r.rule, (r.method,), r.summary) for r in self.instance.raw_routes()]


@attrs.define
class Emulator:
    """Everything one running emulator owns. `sites` are in registry order; the first is the
    primary service, whose endpoints, families and request log the single-service shortcuts
    (`endpoints`, `families`, `request_log`) give."""

    settings: Settings
    seed: Seed
    clock: Clock
    sites: dict[str, Site]
    started_at: float = attrs.field(factory=time.monotonic)
    # State-file data of services that do not run now, written back with every save.
    carried_state: dict[str, Any] = attrs.field(factory=dict)

    @property
    def services(self) -> dict[str, ServiceInstance]:
        return {name: site.instance for name, site in self.sites.items()}

    @property
    def primary(self) -> Site:
        return next(iter(self.sites.values()))

    @property
    def endpoints(self) -> Endpoints:
        return self.primary.endpoints

    @property
    def families(self) -> FamilyMap:
        return self.primary.families

    @property
    def request_log(self) -> RequestLog:
        return self.primary.request_log

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def begin_shutdown(self) -> None:
        for site in self.sites.values():
            site.instance.begin_shutdown()

    def restore_state_file(self) -> None:
        """Lay what `--state-file` holds over the seeded state (nothing if the setting is off
        or the file does not exist yet); StateFileError, naming the file, if it is unusable."""
        path = self.settings.state_file
        if path is None:
            return
        document = load_state(path)
        if document is not None:
            self.carried_state = restore(path, self.services, document)


def choose_services(
    settings: Settings, seed: Seed, services: Sequence[Service]
) -> tuple[Service, ...]:
    """The services to run: `settings.services` if given (unknown names are a SettingsError),
    else those with a block in the seed, else the primary (first registered) service."""
    by_name = {service.name: service for service in services}
    if settings.services is not None:
        unknown = [name for name in settings.services if name not in by_name]
        if unknown:
            raise SettingsError(f"unknown service {unknown[0]!r} (known: {', '.join(by_name)})")
        if not settings.services:
            raise SettingsError("--services names no service")
        return tuple(s for s in services if s.name in settings.services)
    present = [s for s in services if s.name in seed.present]
    return tuple(present) if present else tuple(services[:1])


def build_emulator(
    settings: Settings,
    seed: Seed,
    *,
    services: Sequence[Service] | None = None,
    clock: Clock | None = None,
    randomness: Randomness | None = None,
) -> Emulator:
    """Start the chosen services on their seed blocks (raises SettingsError for an unknown
    service name, ValueError for two families claiming one prefix)."""
    registered = registry.registered_services() if services is None else tuple(services)
    clock = clock or SystemClock()
    randomness = randomness or Randomness()
    sites: dict[str, Site] = {}
    for service in choose_services(settings, seed, registered):
        endpoints = Endpoints()
        context = ServiceContext(
            settings=settings, clock=clock, randomness=randomness, endpoints=endpoints
        )
        instance = service.start(seed.blocks.get(service.name), context)
        # The emulator's own control routes answer in its plain family on every listener.
        families = FamilyMap(default=instance.default_family).with_prefix(CONTROL_PREFIX, EMULATOR)
        for prefix, family in instance.error_families():
            families = families.with_prefix(prefix, family)
        sites[service.name] = Site(
            service=service,
            instance=instance,
            endpoints=endpoints,
            families=families,
            request_log=RequestLog(
                settings.request_log_size,
                access_log=settings.access_log,
                service=service.name,
                secret_names=instance.secret_names,
            ),
        )
    return Emulator(settings=settings, seed=seed, clock=clock, sites=sites)


def create_asgi(emulator: Emulator, site: Site) -> ASGIApp:
    """The ASGI app a service's listeners run: its request log around its raw routes
    (emulator.web.rawasgi), which sit in front of `create_app`'s Quart app."""
    routes = merge_routes([site.instance.raw_routes()])
    dispatcher = RawDispatcher(
        create_app(emulator, site),
        routes,
        site.families,
        body_limit=emulator.settings.max_body_bytes,
    )
    app: ASGIApp = dispatcher
    request_log = site.request_log
    if request_log.capacity or request_log.access_log:
        app = request_log.middleware(dispatcher, site.families)
    return limit_request_head(app, emulator.settings.max_header_bytes, site.families)


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


def create_app(emulator: Emulator, site: Site) -> QuartTrio:
    app = QuartTrio(f"emulator.{site.name}")
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
    app.register_blueprint(control_blueprint(emulator, site))
    for blueprint in site.instance.blueprints():
        if blueprint.name in app.blueprints:
            raise ValueError(f"{site.name}: two blueprints are named {blueprint.name!r}")
        app.register_blueprint(blueprint)
    families = site.families

    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        family = families.for_path(request.path)
        api_error = framework_error(family, error.code or 500, request.path, request.method)
        if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
            api_error.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return error_response(api_error)

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        family = families.for_path(request.path)
        # A domain error of the service, translated once by its family (never by handlers).
        translated = family.translate(error)
        if translated is not None:
            return error_response(translated)
        log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
        return error_response(framework_error(family, 500, request.path, request.method))

    return app
