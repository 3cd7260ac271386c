"""The emulator's own control routes under `/_emulate`: health, state, reset, the request log and
the OpenAPI document.

Owns routes that belong to no emulated service. Every listener has them, scoped to the
listener's service: `/_emulate/reset` on Fabric's port resets Fabric only. Secrets never appear
here: services describe their state without them and the request log is redacted at the source.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from .. import __version__
from ..platform.errors import EMULATOR
from .http import json_response
from .inspector import generic_page

if TYPE_CHECKING:
    from .app import Emulator, Site


CONTROL_PREFIX = "/_emulate"


def control_blueprint(emulator: Emulator, site: Site) -> Blueprint:
    blueprint = Blueprint("emulate", __name__, url_prefix=CONTROL_PREFIX)

    @blueprint.get("/")
    async def inspector() -> Response:
        """The inspector page: the service's own, or the generic state and request log."""
        page = site.instance.inspector_page()
        if page is None:
            page = generic_page()
        return Response(
            page, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @blueprint.get("/health")
    async def health() -> Response:
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "uptimeSeconds": round(emulator.uptime(), 3),
            "service": site.name,
        }
        return json_response(body)

    @blueprint.get("/openapi.json")
    async def openapi() -> Response:
        """This document: every route the emulator serves, generated from its URL map."""
        from quart import current_app

        from .openapi import build_openapi

        routes: list[tuple[str, Iterable[str], str]] = [
            (rule.rule, rule.methods or (), _summary(current_app.view_functions[rule.endpoint]))
            for rule in current_app.url_map.iter_rules()
            if rule.endpoint != "static"
        ]
        routes += site.raw_routes()
        return json_response(build_openapi(routes, site.families, title=site.service.title))

    @blueprint.get("/state")
    async def state() -> Response:
        return json_response(
            {
                "version": __version__,
                "uptimeSeconds": round(emulator.uptime(), 3),
                "seed": emulator.seed.source,
                "services": {site.name: site.instance.describe()},
            }
        )

    @blueprint.post("/reset")
    async def reset() -> Response:
        site.instance.reset()
        return json_response({"status": "reset", "seed": emulator.seed.source})

    @blueprint.get("/requests")
    async def requests() -> Response:
        raw = request.args.get("limit")
        limit = None
        if raw is not None:
            if not raw.isdigit() or int(raw) < 1:
                raise EMULATOR.error(400, "invalid_request", "limit must be a positive integer.")
            limit = int(raw)
        records = site.request_log.recent(limit)
        return json_response(
            {
                "capacity": site.request_log.capacity,
                "requests": [record.to_json() for record in records],
            }
        )

    @blueprint.delete("/requests")
    async def clear_requests() -> Response:
        site.request_log.clear()
        return Response(b"", status=204)

    return blueprint


def _summary(function: Any) -> str:
    doc = (getattr(function, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else getattr(function, "__name__", "")
