"""Async jobs (match batches, file matches): the job record, its one state machine, the table.

Owns `JobStatus` (queued, running, completed, failed), `JobEvent`, the transition table
`TRANSITIONS` and `apply`, the only code that assigns a job's status (an illegal event raises
Conflict and changes nothing); `record_progress` (processed never goes back and never passes
total), `eta_seconds` (remaining rows at the rate seen so far) and `JobTable` (jobs by id, the
queued and running count per API key for the concurrency limits). Imports nothing from trio,
quart or yaml.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import Conflict, NotFound


class JobStatus(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


class JobEvent(enum.Enum):
    START = "start"  # a worker took it
    COMPLETE = "complete"  # every row was matched and the results are stored
    FAIL = "fail"  # it cannot finish (bad file, credits, shutdown); the reason is kept


TRANSITIONS: Mapping[tuple[JobStatus, JobEvent], JobStatus] = {
    (JobStatus.QUEUED, JobEvent.START): JobStatus.RUNNING,
    (JobStatus.QUEUED, JobEvent.FAIL): JobStatus.FAILED,
    (JobStatus.RUNNING, JobEvent.COMPLETE): JobStatus.COMPLETED,
    (JobStatus.RUNNING, JobEvent.FAIL): JobStatus.FAILED,
}


@attrs.frozen
class JobError:
    code: str
    message: str
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(eq=False)
class Job:
    job_id: str
    kind: str  # "match_batch" or "match_file"
    key_id: str  # the API key's id (never its secret)
    snapshot_id: str
    created_at: float
    total: int | None  # None until a file's rows are counted
    options: Any  # MatchOptions
    callback_url: str | None = None
    output_format: str | None = None
    source_key: str | None = None
    status: JobStatus = JobStatus.QUEUED
    processed: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    progress_at: float | None = None
    error: JobError | None = None
    # Where the results are: an artifact id (file jobs) or rows kept in memory (batches).
    results_artifact_id: str | None = None
    results: list[dict[str, Any]] | None = None
    matched: int = 0
    credits_charged: float = 0.0


def apply(job: Job, event: JobEvent, now: float, *, error: JobError | None = None) -> JobStatus:
    """Move `job` through `event`: the only place a job's status is assigned."""
    new_status = TRANSITIONS.get((job.status, event))
    if new_status is None:
        raise Conflict(
            "INVALID_JOB_TRANSITION",
            f"Job '{job.job_id}' is {job.status.value}; it cannot take '{event.value}'.",
            {"job_id": job.job_id, "status": job.status.value, "event": event.value},
        )
    if new_status is JobStatus.FAILED and error is None:
        raise ValueError("a failing job needs its error")
    job.status = new_status
    if event is JobEvent.START:
        job.started_at = now
        job.progress_at = now
    if new_status.finished:
        job.finished_at = now
        job.error = error
        if new_status is JobStatus.COMPLETED and job.total is not None:
            job.processed = job.total
    return new_status


def record_progress(job: Job, processed: int, now: float, *, total: int | None = None) -> None:
    """A running job's new count (and its total once known); counts never go back."""
    if job.status is not JobStatus.RUNNING:
        raise Conflict(
            "INVALID_JOB_TRANSITION",
            f"Job '{job.job_id}' is {job.status.value}; only a running job makes progress.",
            {"job_id": job.job_id, "status": job.status.value},
        )
    if total is not None:
        if total < 0:
            raise ValueError("total must not be negative")
        job.total = total
    if job.total is not None:
        processed = min(processed, job.total)
    job.processed = max(job.processed, processed)
    job.progress_at = now


def percentage(job: Job) -> float:
    if job.status is JobStatus.COMPLETED:
        return 100.0
    if not job.total:
        return 0.0
    return round(100.0 * job.processed / job.total, 1)


def eta_seconds(job: Job, now: float) -> int | None:
    """Seconds left at the rate seen so far; 0 when finished, None before any progress."""
    if job.status.finished:
        return 0
    if job.status is JobStatus.QUEUED or job.started_at is None or job.total is None:
        return None
    if job.processed <= 0:
        return None
    elapsed = max(now - job.started_at, 0.001)
    rate = job.processed / elapsed
    return max(math.ceil((job.total - job.processed) / rate), 0)


@attrs.define
class JobTable:
    jobs: dict[str, Job] = attrs.field(factory=dict)
    # The jobs not known to have finished, by id: what `active_for` counts, so every
    # authorised request costs the jobs in flight, not every job retained (finished ones
    # leave it at the next count).
    _unfinished: dict[str, Job] = attrs.field(factory=dict, init=False)

    def add(self, job: Job) -> None:
        if job.job_id in self.jobs:
            raise Conflict("JOB_EXISTS", f"Job '{job.job_id}' already exists.")
        self.jobs[job.job_id] = job
        if not job.status.finished:
            self._unfinished[job.job_id] = job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound("JOB_NOT_FOUND", f"Job '{job_id}' does not exist.", {"job_id": job_id})
        return job

    def active_for(self, key_id: str) -> tuple[int, int]:
        """(queued, running) jobs of one API key."""
        queued = running = 0
        finished = []
        for job in self._unfinished.values():
            status = job.status
            if status.finished:
                finished.append(job.job_id)
            elif job.key_id != key_id:
                continue
            elif status is JobStatus.QUEUED:
                queued += 1
            else:
                running += 1
        for job_id in finished:
            del self._unfinished[job_id]
        return queued, running

    def forget_finished_before(self, cutoff: float) -> list[Job]:
        """Drop finished jobs older than `cutoff` (retention); returns them."""
        gone = [
            job
            for job in self.jobs.values()
            if job.finished_at is not None and job.finished_at < cutoff
        ]
        for job in gone:
            del self.jobs[job.job_id]
        return gone
