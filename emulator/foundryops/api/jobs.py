"""Job routes: status with progress and ETA (`GET /api/v2/jobs/{job_id}`) and results
(`GET /api/v2/jobs/{job_id}/results`: a batch's results paged with `offset` and `limit`; a file
job's result file streamed from disk in its `output_format`).

Owns both handlers. A key sees only its own jobs (another key's job is JOB_NOT_FOUND).
"""

from __future__ import annotations

from collections.abc import Callable

from ...web.rawasgi import RawRoute
from ..core.errors import Conflict, InvalidRequest, NotFound
from ..core.jobs import Job, JobStatus
from ..engine import job_json
from .common import Call, Ops, Reply, route
from .datasets import artifact_stream

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _own_job(call: Call) -> Job:
    job_id = call.params["job_id"]
    job = call.ops.state.jobs.get(job_id)
    if job.key_id != call.key.key.key_id:
        raise NotFound("JOB_NOT_FOUND", f"Job '{job_id}' does not exist.", {"job_id": job_id})
    return job


async def status(call: Call) -> Reply:
    job = _own_job(call)
    return Reply(200, job_json(job, call.ops.clock.now()))


def _int_query(call: Call, name: str, default: int, low: int, high: int) -> int:
    text = call.query(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidRequest(
            "INVALID_REQUEST", f"{name} must be an integer from {low} to {high}.", {"field": name}
        )
    return int(text)


async def results(call: Call) -> Reply:
    job = _own_job(call)
    if job.status is not JobStatus.COMPLETED:
        detail = {"job_id": job.job_id, "status": job.status.value}
        if job.error is not None:
            detail["error_code"] = job.error.code
        raise Conflict(
            "JOB_NOT_COMPLETED",
            f"Job '{job.job_id}' is {job.status.value}; results exist once it is completed.",
            detail,
        )
    if job.results_artifact_id is not None:
        artifact = call.ops.state.artifacts.get(job.results_artifact_id, call.ops.clock.now())
        return Reply(200, stream=artifact_stream(artifact))
    rows = job.results or []
    offset = _int_query(call, "offset", 0, 0, 10**9)
    limit = _int_query(call, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    page = rows[offset : offset + limit]
    next_offset = offset + limit if offset + limit < len(rows) else None
    return Reply(
        200,
        {
            "job_id": job.job_id,
            "status": job.status.value,
            "total": len(rows),
            "offset": offset,
            "limit": limit,
            "next_offset": next_offset,
            "results": page,
        },
    )


def routes(ops_of: Callable[[], Ops], body_limit: int) -> list[RawRoute]:
    del body_limit
    return [
        route(ops_of, "GET", "/api/v2/jobs/{job_id}", status, scope="jobs",
              summary="A job's status, progress and ETA"),
        route(ops_of, "GET", "/api/v2/jobs/{job_id}/results", results, scope="jobs",
              summary="A job's results (batch: paged JSON; file: the result file)"),
    ]  # fmt: skip
