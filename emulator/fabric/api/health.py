"""Public routes: `/healthz`, `/readyz`, `/v1/health` (the SDK's `health_check`) and the
service's own OpenAPI document at `/openapi.json` (not enveloped).

Imports the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..core.errors import FabricError
from .envelope import Answer, Call, encode
from .routes import FabricApi, Route, drain


class NotReady(FabricError):
    code = "unavailable"
    status = 503


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        names = re.findall(r"{(\w+)}", route.pattern)
        operation: dict[str, Any] = {
            "summary": route.summary,
            "responses": {"default": {"description": "the Fabric envelope"}},
        }
        if names:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in names
            ]
        if not route.public:
            operation["security"] = [{"bearer": []}, {"principal": []}]
        if route.scope not in (None, "*"):
            operation["x-fabric-scope"] = route.scope
        paths.setdefault(route.pattern, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Fabric control plane (emulated)", "version": "1.0"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "principal": {"type": "apiKey", "in": "header", "name": "X-Principal-Id"},
            }
        },
    }


def routes(api: FabricApi, all_routes: Sequence[Route]) -> list[Route]:
    async def healthz(call: Call) -> Answer:
        await drain(call)
        return Answer(200, {"status": "ok"})

    async def readyz(call: Call) -> Answer:
        await drain(call)
        if not api.ready:
            raise NotReady("the control plane is starting or stopping")
        return Answer(200, {"status": "ready"})

    async def openapi(call: Call) -> None:
        await drain(call)
        document = openapi_document([*all_routes, *own])
        await call.raw.respond(200, encode(document), [(b"content-type", b"application/json")])

    own = [
        Route("GET", "/healthz", healthz, public=True, summary="Health check"),
        Route("GET", "/readyz", readyz, public=True, summary="Readiness check"),
        Route("GET", "/v1/health", healthz, public=True, summary="Health check (SDK alias)"),
        Route("GET", "/openapi.json", openapi, public=True, summary="OpenAPI specification"),
    ]
    return own
