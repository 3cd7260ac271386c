"""Compute-module jobs: the job record, its one state machine, results, and the job table.

Owns `JobState` and `JobEvent`, the transition table `TRANSITIONS` and `apply`, the only code that
changes a job's state; `Job`, `JobResult` and `Failure` records; `JobTable` (jobs by id, queued
jobs per deployed app with its bound, results received, retention by count and by bytes,
tombstones that let an expired job be told apart from an unknown one); and the recognition of
the function-failure bodies the compute-module libraries post (`function_failure`).

Time-based rules (timeouts, retention by age) belong to the broker, which keeps the deadlines and
calls in here with explicit jobs; this module only records wall-clock timestamps (`now`).

A job keeps its query as compact JSON bytes (`Job.query_json`), never as parsed objects: those
bytes are what the runtime is sent, and parsed JSON costs about 25 times its size (an 8 MiB
query held 195 MiB while queued; issue 16, defect 9). The bytes of queued jobs are counted
against `RetentionLimits.max_queued_bytes` (a submit past it is QueueFull, a 429), and a
finished job's query counts towards `max_retained_total_bytes` with its result.
Synchronous: imports nothing from trio, quart, hypercorn or yaml.
"""

from __future__ import annotations

import enum
import json
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any

import attrs

from ...platform.statemachine import Transitions
from .errors import Conflict, InvalidArgument, NotFound, QueueFull


class JobState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class JobEvent(enum.Enum):
    # A runtime's poll took the job.
    DISPATCH = "dispatch"
    # The job goes back to the front of its queue: the poll that took it could not deliver it,
    # or its module restarted and the runtime is configured to re-queue.
    RETURN = "return"
    # A complete result arrived that is not a function-failure report.
    SUCCEED = "succeed"
    # A function-failure report arrived, the job timed out, or its module or runtime restarted.
    FAIL = "fail"
    # Nobody may run it any more: its synchronous caller left before dispatch, it waited in the
    # queue too long, or the emulator was reset or shut down.
    CANCEL = "cancel"


TRANSITIONS: Transitions[JobState, JobEvent] = Transitions(
    "job",
    {
        (JobState.QUEUED, JobEvent.DISPATCH): JobState.RUNNING,
        (JobState.QUEUED, JobEvent.CANCEL): JobState.CANCELLED,
        (JobState.RUNNING, JobEvent.RETURN): JobState.QUEUED,
        (JobState.RUNNING, JobEvent.SUCCEED): JobState.SUCCEEDED,
        (JobState.RUNNING, JobEvent.FAIL): JobState.FAILED,
        (JobState.RUNNING, JobEvent.CANCEL): JobState.CANCELLED,
    },
)


class FailureKind(enum.Enum):
    """Why a job failed or was cancelled."""

    FUNCTION_ERROR = "function_error"  # the module posted a failure report
    JOB_TIMEOUT = "job_timeout"  # dispatched, no complete result within the job timeout
    MODULE_RESTARTED = "module_restarted"  # the restart notification named it
    RUNTIME_RESET = "runtime_reset"  # its runtime session was re-created while it ran
    QUEUE_TIMEOUT = "queue_timeout"  # no runtime took it within the queue timeout
    CALLER_LEFT = "caller_left"  # its synchronous caller went away before dispatch
    EXECUTE_TIMEOUT = "execute_timeout"  # its synchronous caller stopped waiting before dispatch
    EMULATOR_RESET = "emulator_reset"
    SHUTDOWN = "shutdown"


@attrs.frozen
class Failure:
    kind: FailureKind
    message: str
    # Reported as the errorInstanceId of the failure, so logs and answers can be matched.
    instance_id: str


@attrs.frozen
class JobResult:
    """What a runtime posted as a job's result."""

    size: int
    # The bytes exactly as posted, as the chunks they arrived in; None when not kept (too large).
    chunks: tuple[bytes, ...] | None
    preview: bytes

    @property
    def retained_size(self) -> int:
        return self.size if self.chunks is not None else 0

    def body(self) -> bytes | None:
        return None if self.chunks is None else b"".join(self.chunks)


@attrs.frozen
class JobSpec:
    """What a caller asks for: a validated execute request."""

    deployed_app_rid: str
    branch: str | None
    query_type: str
    query: Any
    # The query as the compact JSON the runtime is sent: all a job keeps of it.
    query_json: bytes = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        encoded = json.dumps(self.query, separators=(",", ":"), ensure_ascii=False)
        object.__setattr__(self, "query_json", encoded.encode("utf-8"))

    @classmethod
    def from_json(cls, data: Any) -> JobSpec:
        """From the body both the sync and the async contour routes take."""
        if not isinstance(data, dict):
            raise InvalidArgument("invalid_request", "The request body must be a JSON object.")
        rid = data.get("deployedAppRid")
        query_type = data.get("queryType")
        branch = data.get("deployedAppBranch")
        if not isinstance(rid, str) or not rid.strip():
            raise InvalidArgument(
                "invalid_request", "deployedAppRid is required and must be a non-empty string."
            )
        if not isinstance(query_type, str) or not query_type.strip():
            raise InvalidArgument(
                "invalid_request", "queryType is required and must be a non-empty string."
            )
        if branch is not None and not isinstance(branch, str):
            raise InvalidArgument("invalid_request", "deployedAppBranch must be a string.")
        return cls(
            deployed_app_rid=rid.strip(),
            branch=(branch.strip() or None) if isinstance(branch, str) else None,
            query_type=query_type.strip(),
            # A missing query is an empty object; an explicit null stays null.
            query=data.get("query", {}),
        )


@attrs.define(eq=False)
class Job:
    job_id: str
    runtime_id: str
    deployed_app_rid: str
    branch: str
    query_type: str
    # The query as compact JSON (see the module docstring).
    query_json: bytes
    # "sync" (a caller waits on the execute route) or "async" (submitted, polled for status).
    origin: str
    submitted_by: str
    submitted_by_id: str
    submitted_at: float
    state: JobState = JobState.QUEUED
    dispatched_at: float | None = None
    finished_at: float | None = None
    dispatch_count: int = 0
    # Which replica path of the runtime took it ("" for the runtime's own paths).
    replica: str | None = None
    failure: Failure | None = None
    result: JobResult | None = None
    # A result upload is being received (the first complete one wins).
    uploading: bool = False

    @property
    def app_key(self) -> tuple[str, str]:
        return (self.deployed_app_rid, self.branch)

    @property
    def query(self) -> Any:
        """The query parsed again, for inspection (the job itself keeps only the bytes)."""
        return json.loads(self.query_json)

    @property
    def retained_size(self) -> int:
        """The bytes a finished job holds: its query and its result, if kept."""
        result = self.result
        return len(self.query_json) + (0 if result is None else result.retained_size)


def apply(
    job: Job,
    event: JobEvent,
    now: float,
    *,
    replica: str | None = None,
    failure: Failure | None = None,
) -> JobState:
    """Move `job` through `event`; the only place a job's state is assigned.

    Raises Conflict (and changes nothing) when the event is not allowed in the job's state.
    """
    if not TRANSITIONS.allows(job.state, event):
        raise Conflict(
            "illegal_transition",
            f"Job '{job.job_id}' is {job.state.value}; it cannot take the event {event.value}.",
        )
    new_state = TRANSITIONS.target(job.state, event)
    if new_state in (JobState.FAILED, JobState.CANCELLED) and failure is None:
        raise ValueError(f"{event.value} needs a failure reason")
    job.state = new_state
    if event is JobEvent.DISPATCH:
        job.dispatched_at = now
        job.dispatch_count += 1
        job.replica = replica
    elif event is JobEvent.RETURN:
        job.replica = None
        job.uploading = False
    if new_state.finished:
        job.finished_at = now
        job.uploading = False
        job.failure = failure
    return new_state


class ResultDecision(enum.Enum):
    ACCEPT = "accept"  # receive it: it may become the job's result
    DISCARD = "discard"  # the job already ended without a result (timed out, restarted): drop it


@attrs.frozen
class RetentionLimits:
    queue_depth: int = 1000
    max_retained_jobs: int = 10000
    max_retained_total_bytes: int = 256 * 1024 * 1024
    # The query bytes of every queued job together (see the module docstring).
    max_queued_bytes: int = 256 * 1024 * 1024


@attrs.define
class JobTable:
    """Every job the emulator knows, in submission order."""

    limits: RetentionLimits = RetentionLimits()
    jobs: dict[str, Job] = attrs.field(factory=dict)
    queued_per_app: dict[tuple[str, str], int] = attrs.field(factory=dict)
    # Finished jobs, oldest finish first (ids of forgotten jobs are skipped when met).
    finished_order: deque[str] = attrs.field(factory=deque)
    finished_count: int = 0
    retained_bytes: int = 0
    # Query bytes of the queued jobs.
    queued_bytes: int = 0
    # Ids of forgotten jobs (bounded), so a late lookup can say "expired" rather than "unknown".
    tombstones: OrderedDict[str, None] = attrs.field(factory=OrderedDict)

    # Lookups ------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        if job_id in self.tombstones:
            raise NotFound(
                "job_expired",
                f"Compute-module job '{job_id}' has expired: finished jobs are kept for a limited "
                "time and number (foundry.compute_modules.limits).",
                {"jobId": job_id},
            )
        raise NotFound("not_found", f"Unknown compute-module job '{job_id}'.", {"jobId": job_id})

    def running_on(self, runtime_id: str, replica: str | None = None) -> list[Job]:
        """Jobs the runtime (or one replica path of it) has taken and not finished."""
        return [
            job
            for job in self.jobs.values()
            if job.state is JobState.RUNNING
            and job.runtime_id == runtime_id
            and (replica is None or job.replica == replica)
        ]

    def counts(self) -> dict[str, int]:
        counts = {state.value: 0 for state in JobState}
        for job in self.jobs.values():
            counts[job.state.value] += 1
        return counts

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)

    # Changes ------------------------------------------------------------------------------------

    def submit(
        self,
        *,
        job_id: str,
        runtime_id: str,
        deployed_app_rid: str,
        branch: str,
        spec: JobSpec,
        origin: str,
        submitted_by: str,
        submitted_by_id: str,
        now: float,
    ) -> Job:
        """A new queued job; QueueFull when its deployed app already has `queue_depth` waiting."""
        key = (deployed_app_rid, branch)
        if self.queued_per_app.get(key, 0) >= self.limits.queue_depth:
            raise QueueFull(
                "queue_full",
                f"Deployed app '{deployed_app_rid}' (branch {branch}) already has "
                f"{self.limits.queue_depth} jobs waiting for a runtime; retry later.",
            )
        if self.queued_bytes + len(spec.query_json) > self.limits.max_queued_bytes:
            raise QueueFull(
                "queue_full",
                f"The queued jobs already hold {self.queued_bytes} bytes of queries (the bound "
                f"is {self.limits.max_queued_bytes}); retry later.",
            )
        if job_id in self.jobs:
            raise Conflict("duplicate_job", f"Job id '{job_id}' is already in use.")
        job = Job(
            job_id=job_id,
            runtime_id=runtime_id,
            deployed_app_rid=deployed_app_rid,
            branch=branch,
            query_type=spec.query_type,
            query_json=spec.query_json,
            origin=origin,
            submitted_by=submitted_by,
            submitted_by_id=submitted_by_id,
            submitted_at=now,
        )
        self.jobs[job_id] = job
        self.queued_per_app[key] = self.queued_per_app.get(key, 0) + 1
        self.queued_bytes += len(job.query_json)
        return job

    def transition(
        self,
        job: Job,
        event: JobEvent,
        now: float,
        *,
        replica: str | None = None,
        failure: Failure | None = None,
    ) -> list[str]:
        """Apply `event` and keep the table's books; returns ids of jobs forgotten to make room."""
        before = job.state
        apply(job, event, now, replica=replica, failure=failure)
        after = job.state
        if before is JobState.QUEUED:
            self._count_queued(job, -1)
        if after is JobState.QUEUED:
            self._count_queued(job, +1)
        if after.finished:
            self.finished_order.append(job.job_id)
            self.finished_count += 1
            self.retained_bytes += job.retained_size
            return self._evict_over_limits()
        return []

    def _count_queued(self, job: Job, delta: int) -> None:
        self.queued_bytes += delta * len(job.query_json)
        key = job.app_key
        count = self.queued_per_app.get(key, 0) + delta
        if count > 0:
            self.queued_per_app[key] = count
        else:
            self.queued_per_app.pop(key, None)

    def begin_result(self, job: Job, now: float) -> ResultDecision:
        """A runtime starts posting a result for `job`: accept it, discard it, or Conflict."""
        if job.state is JobState.QUEUED:
            if job.dispatch_count == 0:
                raise Conflict(
                    "job_not_dispatched",
                    f"Job '{job.job_id}' has not been given to a runtime yet.",
                )
            # Its poll looked lost and it went back to the queue, yet the module got it: take
            # the job out of the queue again (pollers skip jobs that are no longer queued).
            self.transition(job, JobEvent.DISPATCH, now, replica=job.replica)
        if job.state is JobState.RUNNING:
            if job.uploading:
                raise Conflict(
                    "result_in_progress",
                    f"A result for job '{job.job_id}' is already being received.",
                )
            job.uploading = True
            return ResultDecision.ACCEPT
        if job.result is not None:
            raise Conflict(
                "result_exists",
                f"Job '{job.job_id}' already has a result; the first complete result wins.",
            )
        return ResultDecision.DISCARD

    def abort_result(self, job: Job) -> None:
        """An upload ended before its body was complete: it does not count."""
        job.uploading = False

    def finish_result(
        self, job: Job, result: JobResult, failure_message: str | None, now: float, instance_id: str
    ) -> list[str] | None:
        """A complete upload: the job succeeds, or fails when the body is a failure report.

        Returns None (and records nothing) when the job ended meanwhile (it timed out, its
        module restarted); otherwise the ids of jobs forgotten to make room.
        """
        job.uploading = False
        if job.state is not JobState.RUNNING:
            return None
        job.result = result
        if failure_message is None:
            return self.transition(job, JobEvent.SUCCEED, now)
        failure = Failure(FailureKind.FUNCTION_ERROR, failure_message, instance_id)
        return self.transition(job, JobEvent.FAIL, now, failure=failure)

    def forget(self, job_id: str) -> bool:
        """Drop a finished job (its retention ended); False when it is gone or not finished."""
        job = self.jobs.get(job_id)
        if job is None or not job.state.finished:
            return False
        del self.jobs[job_id]
        self.finished_count -= 1
        self.retained_bytes -= job.retained_size
        self.tombstones[job_id] = None
        while len(self.tombstones) > self.limits.max_retained_jobs:
            self.tombstones.popitem(last=False)
        # Jobs are forgotten roughly in finishing order: drop the ids already gone from the front.
        while self.finished_order and self.finished_order[0] not in self.jobs:
            self.finished_order.popleft()
        return True

    def _evict_over_limits(self) -> list[str]:
        evicted: list[str] = []
        while self.finished_order and (
            self.finished_count > self.limits.max_retained_jobs
            or self.retained_bytes > self.limits.max_retained_total_bytes
        ):
            job_id = self.finished_order[0]
            if self.forget(job_id):
                evicted.append(job_id)
            elif self.finished_order and self.finished_order[0] == job_id:
                self.finished_order.popleft()
        return evicted


# Function-failure reports -------------------------------------------------------------------------

# A result body longer than this is never taken for a failure report (and is not held back).
FAILURE_BODY_LIMIT = 1024 * 1024
_FAILURE_KEYS = (b'"exception"', b'"error"')
_WHITESPACE = b" \t\r\n"


def may_be_failure(prefix: bytes) -> bool | None:
    """Whether a result body starting with `prefix` could be a failure report.

    None: cannot tell yet (more bytes needed). A failure report is a JSON object whose first
    key is "exception" (Python library) or "error" (Python and Node libraries).
    """
    text = prefix.lstrip(_WHITESPACE)
    if not text:
        return None if len(prefix) < 1024 else False
    if not text.startswith(b"{"):
        return False
    rest = text[1:].lstrip(_WHITESPACE)
    if not rest:
        return None if len(prefix) < 1024 else False
    undecided = False
    for key in _FAILURE_KEYS:
        if rest.startswith(key):
            return True
        if key.startswith(rest):
            undecided = True
    return None if undecided else False


def function_failure(body: bytes) -> str | None:
    """The module's message when `body` is a function-failure report, else None.

    Recognised (exactly these keys, string values): `{"exception": m}` (Python, a raising
    function), `{"error": m}` (Python: unknown query type or a result it could not post; Node:
    a non-Error throwable), `{"error": name, "reason": m}` (Node: a thrown Error).
    """
    if len(body) > FAILURE_BODY_LIMIT or not body.lstrip(_WHITESPACE).startswith(b"{"):
        return None
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    keys = set(value)
    if keys == {"exception"}:
        return str(value["exception"])
    if keys == {"error"}:
        return str(value["error"])
    if keys == {"error", "reason"}:
        return f"{value['error']}: {value['reason']}"
    return None
