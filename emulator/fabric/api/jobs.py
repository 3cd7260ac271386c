"""Jobs: submit (idempotent, with a cost estimate), get, list with cursor paging, usage roll-up
and the per-job event stream.

Imports the Fabric core, the engine's stream helper and the API plumbing; nothing from quart.
"""

from __future__ import annotations

from ..core.events import DomainEvent
from ..core.jobs import JobStatus, parse_limit
from . import serialize
from .envelope import Answer, Call
from .routes import FabricApi, Route, drain, page_links, read_json
from .streams import stream_events


def routes(api: FabricApi) -> list[Route]:
    plane, executor = api.plane, api.engine.executor

    async def submit(call: Call) -> Answer:
        body = await read_json(call)
        executor.ensure_room()
        job, replayed = plane.submit_job(
            call.principal(), body, call.raw.header(b"idempotency-key")
        )
        call.name_org(job.organization_id)
        links = {"self": f"/v1/jobs/{job.id}", "events": f"/v1/jobs/{job.id}/events"}
        if replayed:
            return Answer(200, serialize.job(job), links, {"Idempotent-Replayed": "true"})
        executor.submit_nowait(plane.runs[job.workflow_run_id])
        return Answer(201, serialize.job(job), links)

    async def get(call: Call) -> Answer:
        await drain(call)
        job = plane.get_job(call.principal(), call.raw.params["id"])
        call.name_org(job.organization_id)
        return Answer(200, serialize.job(job))

    async def list_jobs(call: Call) -> Answer:
        await drain(call)
        query = call.query()
        limit = parse_limit(query.get("limit"))
        org = query.get("organization_id") or None
        page = plane.list_jobs(call.principal(), limit, query.get("cursor") or None, org)
        call.name_org(org)
        return Answer(200, serialize.job_page(page), page_links(call.path, query, page.next_cursor))

    async def usage(call: Call) -> Answer:
        await drain(call)
        job, records = plane.job_usage(call.principal(), call.raw.params["id"])
        call.name_org(job.organization_id)
        return Answer(200, serialize.job_usage(job, records))

    async def events(call: Call) -> None:
        await drain(call)
        job = plane.get_job(call.principal(), call.raw.params["id"])
        include_internal = call.query().get("include_internal", "").lower() == "true"

        def accepts(event: DomainEvent) -> bool:
            return (
                event.job_id == job.id
                and event.name.startswith("job.")
                and (include_internal or not event.internal)
            )

        def settled() -> bool:
            return job.status in (JobStatus.COMPLETED, JobStatus.FAILED)

        await stream_events(
            api,
            call,
            accepts,
            replay=True,
            closes=lambda e: e.terminal_for_job,
            already_closed=settled,
            candidates=lambda: plane.events.of_job(job.id),
            topic=job.id,
        )

    return [
        Route("POST", "/v1/jobs", submit, "jobs:write", summary="Submit a job"),
        Route("GET", "/v1/jobs/{id}", get, "jobs:read", summary="Get job"),
        Route("GET", "/v1/jobs", list_jobs, "jobs:read", summary="List jobs"),
        Route("GET", "/v1/jobs/{id}/usage", usage, "jobs:read", summary="Job cost/usage roll-up"),
        Route("GET", "/v1/jobs/{id}/events", events, "jobs:read", summary="Per-job events (SSE)"),
    ]
