"""Jobs: the record, its state machine, idempotency keys and cursor paging.

Owns `Job`, `JobStatus`/`JobEvent` with `JOB_TRANSITIONS` + `apply_job` (the only code that
changes a job's status: pending -> started -> completed | failed; a pending job may also fail
when its backing run is cancelled), `Idempotency` (keys scoped by organization, route and key,
compared on the canonical body) and `JobPage`/`page_jobs` (newest first, an opaque cursor keyed
on (created_at, id) so pages neither overlap nor skip). Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ...platform.statemachine import Transitions
from .errors import Conflict, ValidationFailed, transition

MAX_PAGE = 200


class JobStatus(enum.Enum):
    PENDING = "pending"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


class JobEvent(enum.Enum):
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"


JOB_TRANSITIONS: Transitions[JobStatus, JobEvent] = Transitions(
    "job",
    {
        (JobStatus.PENDING, JobEvent.START): JobStatus.STARTED,
        (JobStatus.PENDING, JobEvent.FAIL): JobStatus.FAILED,
        (JobStatus.STARTED, JobEvent.COMPLETE): JobStatus.COMPLETED,
        (JobStatus.STARTED, JobEvent.FAIL): JobStatus.FAILED,
    },
)


@attrs.define
class Job:
    id: str
    organization_id: str
    workflow_run_id: str
    modality: str
    input: Any
    params: dict[str, Any]
    tier: str | None
    model: str | None
    idempotency_key: str | None
    estimated_cost_usd: float
    created_by: str
    created_at: float
    updated_at: float
    status: JobStatus = JobStatus.PENDING
    output: Any = None
    error: str | None = None
    provider_id: str | None = None
    usage: dict[str, Any] | None = None
    started_at: float | None = None
    completed_at: float | None = None


def apply_job(job: Job, event: JobEvent, now: float) -> None:
    target = transition(JOB_TRANSITIONS, job.status, event)
    job.status = target
    job.updated_at = now
    if target is JobStatus.STARTED:
        job.started_at = now
    elif target.terminal:
        job.completed_at = now


def canonical_body(body: Mapping[str, Any]) -> str:
    """Sorted-key JSON without `idempotency_key`: what a replay must match."""
    stripped = {k: v for k, v in body.items() if k != "idempotency_key"}
    return json.dumps(stripped, sort_keys=True, separators=(",", ":"))


@attrs.define
class Idempotency:
    """(organization, route, key) -> (canonical body, resource id), kept for the lifetime."""

    entries: dict[tuple[str, str, str], tuple[str, str]] = attrs.field(factory=dict)
    by_resource: dict[str, tuple[str, str, str]] = attrs.field(factory=dict)

    def lookup(self, org: str, route: str, key: str, body: Mapping[str, Any]) -> str | None:
        """The original resource id for a replay, None for a first use; Conflict on a new body."""
        found = self.entries.get((org, route, key))
        if found is None:
            return None
        fingerprint, resource_id = found
        if fingerprint != canonical_body(body):
            raise Conflict("idempotency key reused with a different request")
        return resource_id

    def forget(self, resource_id: str) -> None:
        """Drop the key that names a resource the emulator no longer keeps."""
        key = self.by_resource.pop(resource_id, None)
        if key is not None:
            del self.entries[key]

    def remember(
        self, org: str, route: str, key: str, body: Mapping[str, Any], resource_id: str
    ) -> None:
        self.entries[(org, route, key)] = (canonical_body(body), resource_id)
        self.by_resource[resource_id] = (org, route, key)


def encode_cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{job_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, job_id = text.split("|", 1)
        return float(stamp), job_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed("malformed cursor") from None


def parse_limit(text: str | None, default: int = 50) -> int:
    if text is None or text == "":
        return default
    try:
        limit = int(text)
    except ValueError:
        raise ValidationFailed("limit must be an integer") from None
    if limit < 1:
        raise ValidationFailed("limit must be at least 1")
    return min(limit, MAX_PAGE)


@attrs.frozen
class JobPage:
    items: tuple[Job, ...]
    limit: int
    next_cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def page_jobs(jobs: Iterable[Job], limit: int, cursor: str | None) -> JobPage:
    ordered = sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)
    if cursor is not None:
        bound = decode_cursor(cursor)
        ordered = [j for j in ordered if (j.created_at, j.id) < bound]
    items = tuple(ordered[:limit])
    more = len(ordered) > limit
    last = items[-1] if items else None
    next_cursor = encode_cursor(last.created_at, last.id) if more and last is not None else None
    return JobPage(items, limit, next_cursor)
