"""The inspector page (`GET /_emulate/`) and what it reads besides `/_emulate/state`.

Owns the page (served through `FoundryInstance.inspector_page`), the job detail route
`GET /_emulate/foundry/compute-modules/jobs/{jobId}` (the query and the first bytes of the
result), and the secret-free summaries of runtimes, deployed apps and jobs that
`FoundryInstance.describe()` puts under `computeModules`. Like every `/_emulate` route these
need no authentication, so they never carry a secret: no Module-Auth-Token, no bearer token.
The page is one self-contained HTML file (no external assets: it works offline).
"""

from __future__ import annotations

import base64
import codecs
import itertools
from importlib import resources
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from ...web.http import json_response
from ..core.jobs import Job
from ..core.runtimes import Runtime
from .runtime import PREFIX, millis

if TYPE_CHECKING:
    from ..state import FoundryState

# The most recent jobs the state shows (the detail route reaches every job still kept).
RECENT_JOBS = 50
# A runtime counts as connected while a poll is open or for this long after one started.
CONNECTED_GRACE_SECONDS = 10.0


def inspector_page() -> bytes:
    """Foundry's inspector page (served at `GET /_emulate/` through the contract's hook)."""
    return resources.files("emulator.foundry").joinpath("templates", "inspector.html").read_bytes()


def inspector_blueprint(state: FoundryState) -> Blueprint:
    blueprint = Blueprint("inspector", __name__)

    @blueprint.get(PREFIX + "/jobs/<job_id>")
    async def job_detail(job_id: str) -> Response:
        """One job for the inspector: its query and the first bytes of its result."""
        job = state.broker.jobs.get(job_id)
        return json_response(job_detail_to_json(job), headers={"Cache-Control": "no-store"})

    return blueprint


# Serializers ------------------------------------------------------------------------------------


def compute_modules_to_json(state: FoundryState) -> dict[str, Any]:
    """The job plane for `/_emulate/state` (and the inspector): never a token."""
    broker = state.broker
    registry = state.runtimes
    now = state.context.clock.now()
    table = broker.jobs
    recent = list(itertools.islice(reversed(table.jobs.values()), RECENT_JOBS))
    recent.reverse()
    return {
        "runtimes": [
            runtime_summary_to_json(runtime, broker.polling(runtime.runtime_id), now)
            for runtime in registry.runtimes.values()
        ],
        "deployedApps": [
            {
                "deployedAppRid": binding.deployed_app_rid,
                "branch": binding.branch,
                "runtimeId": binding.runtime_id,
                "displayName": binding.display_name,
                "active": binding.active,
                "queued": table.queued_per_app.get((binding.deployed_app_rid, binding.branch), 0),
            }
            for binding in registry.bindings.values()
        ],
        "jobs": {
            "counts": table.counts(),
            "retainedResultBytes": table.retained_bytes,
            "recent": [job_summary_to_json(job) for job in recent],
        },
    }


def runtime_summary_to_json(runtime: Runtime, polling: int, now: float) -> dict[str, Any]:
    recently = (
        runtime.last_poll_at is not None and now - runtime.last_poll_at <= CONNECTED_GRACE_SECONDS
    )
    return {
        "runtimeId": runtime.runtime_id,
        "displayName": runtime.display_name,
        "connected": polling > 0 or recently,
        "pollersWaiting": polling,
        "lastPollAt": millis(runtime.last_poll_at),
        "lastSchemaPostAt": millis(runtime.last_schema_at),
        "resets": runtime.resets,
        "onRestart": runtime.on_restart.value,
        "schemas": list(runtime.schemas),
    }


def job_summary_to_json(job: Job) -> dict[str, Any]:
    return {
        "jobId": job.job_id,
        "state": job.state.value,
        "queryType": job.query_type,
        "runtimeId": job.runtime_id,
        "deployedAppRid": job.deployed_app_rid,
        "branch": job.branch,
        "origin": job.origin,
        "replica": job.replica or None,
        "dispatchCount": job.dispatch_count,
        "submittedAt": millis(job.submitted_at),
        "startedAt": millis(job.dispatched_at),
        "finishedAt": millis(job.finished_at),
        "resultBytes": None if job.result is None else job.result.size,
        "failure": None if job.failure is None else job.failure.kind.value,
    }


def job_detail_to_json(job: Job) -> dict[str, Any]:
    result = job.result
    preview: str | None = None
    encoding: str | None = None
    if result is not None:
        preview, encoding = preview_text(
            result.preview, complete=len(result.preview) >= result.size
        )
    return {
        **job_summary_to_json(job),
        "query": job.query,
        "submittedBy": job.submitted_by,
        "resultPreview": preview,
        "resultPreviewEncoding": encoding,
        "resultPreviewComplete": None if result is None else len(result.preview) >= result.size,
        "failure": None
        if job.failure is None
        else {"kind": job.failure.kind.value, "message": job.failure.message},
    }


def preview_text(data: bytes, *, complete: bool) -> tuple[str, str]:
    """The first bytes as UTF-8 text (a character cut at the end is dropped), else base64."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(data, final=complete), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"
