"""Workflow definitions and runs: upsert/list/get definitions; create (idempotent), get, start
(202), cancel runs; the per-run event stream that closes after the terminal event.

Imports the Fabric core, the stream helper and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from ..core.errors import ValidationFailed
from ..core.events import DomainEvent
from . import serialize
from .envelope import Answer, Call
from .routes import FabricApi, Route, drain, read_json
from .streams import stream_events


def routes(api: FabricApi) -> list[Route]:
    plane, executor = api.plane, api.engine.executor

    async def upsert(call: Call) -> Answer:
        body = await read_json(call)
        definition, created = plane.upsert_definition(call.principal(), body)
        call.name_org(definition.organization_id)
        links = {"self": f"/v1/workflow-definitions/{definition.id}"}
        return Answer(201 if created else 200, serialize.definition(definition), links)

    async def list_definitions(call: Call) -> Answer:
        await drain(call)
        org = call.query().get("organization_id") or None
        call.name_org(org)
        items = plane.list_definitions(call.principal(), org)
        return Answer(200, [serialize.definition(d) for d in items])

    async def get_definition(call: Call) -> Answer:
        await drain(call)
        definition = plane.get_definition(call.principal(), call.raw.params["id"])
        call.name_org(definition.organization_id)
        return Answer(200, serialize.definition(definition))

    async def create_run(call: Call) -> Answer:
        body = await read_json(call)
        run, replayed = plane.create_run(
            call.principal(), body, call.raw.header(b"idempotency-key")
        )
        call.name_org(run.organization_id)
        links = {
            "self": f"/v1/workflow-runs/{run.id}",
            "events": f"/v1/workflow-runs/{run.id}/events",
        }
        if replayed:
            return Answer(200, serialize.run(run), links, {"Idempotent-Replayed": "true"})
        return Answer(201, serialize.run(run), links)

    async def get_run(call: Call) -> Answer:
        await drain(call)
        run = plane.get_run(call.principal(), call.raw.params["id"])
        call.name_org(run.organization_id)
        return Answer(200, serialize.run(run))

    async def start(call: Call) -> Answer:
        body = await read_json(call)
        priority = body.get("priority")
        executor.ensure_room()
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValidationFailed("priority must be an integer")
        run = plane.start_run(call.principal(), call.raw.params["id"])
        if priority is not None:
            run.priority = priority
        call.name_org(run.organization_id)
        executor.submit_nowait(run)
        return Answer(202, serialize.run(run))

    async def cancel(call: Call) -> Answer:
        await drain(call)
        run, changed = plane.cancel_run(call.principal(), call.raw.params["id"])
        if changed:
            executor.cancel_nowait(run.id)
        call.name_org(run.organization_id)
        return Answer(200, serialize.run(run))

    async def events(call: Call) -> None:
        await drain(call)
        run = plane.get_run(call.principal(), call.raw.params["id"])
        include_internal = call.query().get("include_internal", "").lower() == "true"

        def accepts(event: DomainEvent) -> bool:
            return (
                event.run_id == run.id
                and event.name.startswith("workflow.")
                and (include_internal or not event.internal)
            )

        await stream_events(
            api,
            call,
            accepts,
            replay=True,
            closes=lambda e: e.terminal_for_run,
            already_closed=lambda: run.status.terminal,
            candidates=lambda: plane.events.of_run(run.id),
            topic=run.id,
        )

    return [
        Route(
            "POST",
            "/v1/workflow-definitions",
            upsert,
            "workflows:write",
            summary="Create definition (NodeDefinition schema)",
        ),
        Route(
            "GET",
            "/v1/workflow-definitions",
            list_definitions,
            "workflows:read",
            summary="List definitions",
        ),
        Route(
            "GET",
            "/v1/workflow-definitions/{id}",
            get_definition,
            "workflows:read",
            summary="Get definition",
        ),
        Route("POST", "/v1/workflow-runs", create_run, "workflows:write", summary="Create run"),
        Route("GET", "/v1/workflow-runs/{id}", get_run, "workflows:read", summary="Get run"),
        Route(
            "POST",
            "/v1/workflow-runs/{id}/start",
            start,
            "workflows:write",
            summary="Start execution",
        ),
        Route(
            "POST", "/v1/workflow-runs/{id}/cancel", cancel, "workflows:write", summary="Cancel run"
        ),
        Route(
            "GET",
            "/v1/workflow-runs/{id}/events",
            events,
            "workflows:read",
            summary="Per-run events (SSE)",
        ),
    ]
