"""A queued job keeps its query as JSON bytes, and queued bytes are bounded (issue 16,
defect 9). Sync: core/ is plain Python."""

from __future__ import annotations

import json
import sys

import attrs
import pytest

from emulator.foundry.core.errors import QueueFull
from emulator.foundry.core.jobs import Job, JobEvent, JobSpec, JobTable, RetentionLimits

APP = "ri.foundry.main.deployed-app.a"


def spec(query: object) -> JobSpec:
    return JobSpec(deployed_app_rid=APP, branch="master", query_type="q", query=query)


def submit(table: JobTable, job_id: str, query: object) -> None:
    table.submit(
        job_id=job_id,
        runtime_id="rt",
        deployed_app_rid=APP,
        branch="master",
        spec=spec(query),
        origin="async",
        submitted_by="jane",
        submitted_by_id="u",
        now=0.0,
    )


def test_a_job_keeps_its_query_as_the_json_the_runtime_gets() -> None:
    table = JobTable()
    query = {"rows": [{"i": i, "name": "x" * 10} for i in range(1000)]}
    submit(table, "j", query)
    job = table.get("j")
    assert job.query_json == json.dumps(query, separators=(",", ":")).encode()
    assert job.query == query
    # Nothing parsed is kept: the job holds bytes, a few times smaller than the objects.
    kept = [getattr(job, field.name) for field in attrs.fields(Job)]
    assert not any(isinstance(value, (dict, list)) for value in kept)
    assert sys.getsizeof(job.query_json) < 2 * len(job.query_json)


def test_queued_query_bytes_are_bounded_with_queue_full() -> None:
    table = JobTable(RetentionLimits(max_queued_bytes=10_000))
    big = {"data": "x" * 4000}
    submit(table, "a", big)
    submit(table, "b", big)
    with pytest.raises(QueueFull):
        submit(table, "c", big)
    assert table.queued_bytes <= 10_000
    # A job leaving the queue gives its bytes back.
    table.transition(table.get("a"), JobEvent.DISPATCH, 1.0)
    submit(table, "c", big)
    assert table.queued_bytes == 2 * len(table.get("c").query_json)
