"""Usage summaries and records per organization; organization and global audit logs.

Imports the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from ..core.plane import parse_timestamp
from . import serialize
from .envelope import Answer, Call
from .routes import FabricApi, Route, drain


def routes(api: FabricApi) -> list[Route]:
    plane = api.plane

    async def usage(call: Call) -> Answer:
        await drain(call)
        org = call.raw.params["id"]
        call.name_org(org)
        query = call.query()
        start = parse_timestamp(query["from"], "from") if query.get("from") else None
        end = parse_timestamp(query["to"], "to") if query.get("to") else None
        return Answer(
            200, serialize.usage_summary(plane.org_usage(call.principal(), org, start, end))
        )

    async def records(call: Call) -> Answer:
        await drain(call)
        org = call.raw.params["id"]
        call.name_org(org)
        items = plane.org_usage_records(call.principal(), org)
        return Answer(200, [serialize.usage_record(r) for r in items])

    async def org_audit(call: Call) -> Answer:
        await drain(call)
        org = call.raw.params["id"]
        call.name_org(org)
        return Answer(
            200, [serialize.audit_entry(e) for e in plane.org_audit(call.principal(), org)]
        )

    async def global_audit(call: Call) -> Answer:
        await drain(call)
        return Answer(200, [serialize.audit_entry(e) for e in plane.global_audit(call.principal())])

    return [
        Route("GET", "/v1/organizations/{id}/usage", usage, summary="Usage summary"),
        Route("GET", "/v1/organizations/{id}/usage/records", records, summary="Usage records"),
        Route("GET", "/v1/organizations/{id}/audit-logs", org_audit, summary="Org audit trail"),
        Route("GET", "/v1/audit-logs", global_audit, summary="Global audit logs"),
    ]
