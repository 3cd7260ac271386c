"""API keys: create (the raw key once), list, get, revoke (DELETE) and disable.

Imports the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from . import serialize
from .envelope import Answer, Call
from .routes import FabricApi, Route, drain, read_json


def routes(api: FabricApi) -> list[Route]:
    plane = api.plane

    async def create(call: Call) -> Answer:
        body = await read_json(call)
        key, raw = plane.create_api_key(call.principal(), body)
        call.name_org(key.organization_id)
        return Answer(
            201,
            serialize.created_api_key(key, raw),
            {"self": f"/v1/api-keys/{key.id}"},
            {"Cache-Control": "no-store"},
        )

    async def list_keys(call: Call) -> Answer:
        await drain(call)
        return Answer(200, [serialize.api_key(k) for k in plane.list_api_keys(call.principal())])

    async def get(call: Call) -> Answer:
        await drain(call)
        key = plane.get_api_key(call.principal(), call.raw.params["id"])
        call.name_org(key.organization_id)
        return Answer(200, serialize.api_key(key))

    async def revoke(call: Call) -> Answer:
        await drain(call)
        key = plane.revoke_api_key(call.principal(), call.raw.params["id"])
        call.name_org(key.organization_id)
        return Answer(200, serialize.api_key(key))

    async def disable(call: Call) -> Answer:
        await drain(call)
        key = plane.disable_api_key(call.principal(), call.raw.params["id"])
        call.name_org(key.organization_id)
        return Answer(200, serialize.api_key(key))

    return [
        Route("POST", "/v1/api-keys", create, summary="Create key (returns raw key once)"),
        Route("GET", "/v1/api-keys", list_keys, summary="List keys"),
        Route("GET", "/v1/api-keys/{id}", get, summary="Get key metadata"),
        Route("DELETE", "/v1/api-keys/{id}", revoke, summary="Revoke key"),
        Route("POST", "/v1/api-keys/{id}/disable", disable, summary="Disable key"),
    ]
