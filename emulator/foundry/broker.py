"""The compute-module job plane on trio: job queues runtimes long-poll, result streams to callers.

Owns `Broker` (submitting jobs, handing them to polling runtimes, taking them back when a poll
could not deliver them, result uploads, restart notifications, runtime resets, the deadline sweep
and closing) and `RuntimeQueue` (the jobs waiting for one runtime and the polls parked on it).
The result bytes themselves travel through results.py (`ResultPipe`, `ResultUpload`).

How jobs reach pollers: each runtime has a deque of waiting jobs and a `trio.lowlevel.ParkingLot`
of parked polls. A poll pops the first job still queued and marks it dispatched without a
checkpoint in between, so a cancelled poll (timeout, disconnect) never consumes a job; a job taken
but not delivered goes back to the *front* (`give_back`). A plain memory channel cannot put a job
back at the front or skip a job whose caller left, which is why the queue is a deque; the result
chunks, which flow one way in order, do travel on a bounded `trio` memory channel, so a slow
caller slows the runtime's upload (backpressure, byte for byte, nothing re-encoded).

Every timeout has a defined effect: the poll timeout (at the call site) ends a poll with 204 and
consumes nothing; the execute timeout (at the call site) cancels a job nobody took yet and leaves
a running one running (its result is kept); the job timeout fails a dispatched job without a
complete result; the queue timeout cancels a job no runtime took; retention forgets finished
jobs. The last three are deadlines in trio time, swept by `run()`, which sleeps until the next
one. Closing (shutdown, emulator reset) answers every waiter at once.

Imports trio and the Foundry core; must not import quart or hypercorn (HTTP is api/runtime.py and
api/contour.py).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from ..platform.clock import Clock, Randomness
from .core.errors import NotFound
from .core.jobs import (
    Failure,
    FailureKind,
    Job,
    JobEvent,
    JobResult,
    JobSpec,
    JobState,
    JobTable,
    ResultDecision,
    RetentionLimits,
)
from .core.runtimes import Runtime, RuntimeRegistry
from .results import ResultPipe, ResultUpload
from .seed import JobLimitsSeed, OnRestart

log = logging.getLogger("emulator.foundry.broker")
# Deadline entries of ended jobs are dropped once this many jobs have ended since the last time.
COMPACT_EVERY = 1024

JOB_ID_PREFIX = "foundry_job_"


class BrokerClosed(Exception):
    """The broker was closed (shutdown or emulator reset) and takes no more work."""

    def __init__(self, kind: FailureKind) -> None:
        super().__init__(kind.value)
        self.kind = kind


class RuntimeQueue:
    """The jobs waiting for one runtime, and the polls parked until one arrives."""

    def __init__(self) -> None:
        self.jobs: deque[Job] = deque()
        self.lot = trio.lowlevel.ParkingLot()
        # Polls of this runtime being held open right now.
        self.polling = 0
        # Entries of `jobs` that ended while waiting (skipped when met, compacted when many).
        self.stale = 0

    def put(self, job: Job, *, front: bool = False) -> None:
        if front:
            self.jobs.appendleft(job)
        else:
            self.jobs.append(job)
        self.lot.unpark()

    def pop_queued(self) -> Job | None:
        """The first job still queued; jobs that ended or were taken meanwhile are dropped."""
        while self.jobs:
            job = self.jobs.popleft()
            if job.state is JobState.QUEUED:
                return job
            self.stale = max(0, self.stale - 1)
        return None

    def ended_while_waiting(self) -> None:
        """A queued job ended (cancelled): keep the deque from filling up with such jobs when
        nobody polls, by dropping them once they are the majority."""
        self.stale += 1
        if self.stale > 64 and self.stale * 2 > len(self.jobs):
            self.jobs = deque(job for job in self.jobs if job.state is JobState.QUEUED)
            self.stale = 0

    def waiting(self) -> int:
        return sum(1 for job in self.jobs if job.state is JobState.QUEUED)


class Broker:
    def __init__(
        self,
        jobs: JobTable,
        runtimes: RuntimeRegistry,
        limits: JobLimitsSeed,
        clock: Clock,
        randomness: Randomness,
    ) -> None:
        self.jobs = jobs
        self.runtimes = runtimes
        self.limits = limits
        self.clock = clock
        self.randomness = randomness
        self.closed: FailureKind | None = None
        self._queues: dict[str, RuntimeQueue] = {}
        self._pipes: dict[str, ResultPipe] = {}
        # Deadlines in trio time; each deque is in deadline order because its offset is fixed.
        # Entries name jobs by id, so a forgotten job's memory is not held until its deadline.
        self._job_deadlines: deque[tuple[float, str, int]] = deque()
        self._queue_deadlines: deque[tuple[float, str]] = deque()
        self._ended_since_compaction = 0
        self._retention: deque[tuple[float, str]] = deque()
        self._wake = trio.Event()
        # Set (and dropped) at every change of a job's state or of a poll count, only while
        # someone waits in `wait_until`.
        self._changed: trio.Event | None = None

    @classmethod
    def build(
        cls,
        runtimes: RuntimeRegistry,
        limits: JobLimitsSeed,
        clock: Clock,
        randomness: Randomness,
    ) -> Broker:
        table = JobTable(
            RetentionLimits(
                queue_depth=limits.queue_depth,
                max_retained_jobs=limits.max_retained_jobs,
                max_retained_total_bytes=limits.max_retained_total_bytes,
            )
        )
        return cls(table, runtimes, limits, clock, randomness)

    # Callers ------------------------------------------------------------------------------------

    def submit(self, spec: JobSpec, *, submitted_by: str, submitted_by_id: str, sync: bool) -> Job:
        """Queue a job for the runtime bound to the deployed app (NotFound, QueueFull, ...)."""
        if self.closed is not None:
            raise BrokerClosed(self.closed)
        binding = self.runtimes.resolve(spec.deployed_app_rid, spec.branch)
        job = self.jobs.submit(
            job_id=self.randomness.token(JOB_ID_PREFIX, 20),
            runtime_id=binding.runtime_id,
            deployed_app_rid=binding.deployed_app_rid,
            branch=binding.branch,
            spec=spec,
            origin="sync" if sync else "async",
            submitted_by=submitted_by,
            submitted_by_id=submitted_by_id,
            now=self.clock.now(),
        )
        if sync:
            self._pipes[job.job_id] = ResultPipe()
        self._push_deadline(
            self._queue_deadlines, (trio.current_time() + self.limits.queue_timeout, job.job_id)
        )
        self._queue(job.runtime_id).put(job)
        self._notify()
        return job

    def pipe(self, job: Job) -> ResultPipe:
        return self._pipes[job.job_id]

    def has_caller(self, job: Job) -> bool:
        """Whether a synchronous caller still waits for this job's result."""
        return job.job_id in self._pipes

    def caller_gone(self, job: Job, kind: FailureKind) -> None:
        """A synchronous caller stopped waiting (left, or its execute timeout passed).

        Before dispatch the job is cancelled (no runtime will ever see it); after dispatch it
        runs on and its result is kept for `jobs/result/v2`.
        """
        pipe = self._pipes.pop(job.job_id, None)
        if pipe is not None:
            pipe.receive_channel.close()
            self._notify()
        if job.state is JobState.QUEUED:
            if kind is FailureKind.EXECUTE_TIMEOUT:
                message = (
                    f"No runtime took the job within the execute timeout "
                    f"({self.limits.execute_timeout:g} s)."
                )
            else:
                message = "The synchronous caller went away before a runtime took the job."
            self._finish(job, JobEvent.CANCEL, kind, message)

    # Runtimes -----------------------------------------------------------------------------------

    async def take(self, runtime: Runtime, replica: str = "") -> Job | None:
        """The next job for `runtime`, waiting as long as it takes (the caller bounds the wait).

        Cancellation-safe: a cancelled call has taken nothing. The job comes back dispatched; if
        it cannot be delivered, pass it to `give_back`. None when the broker was closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        queue = self._queue(runtime.runtime_id)
        runtime.last_poll_at = self.clock.now()
        queue.polling += 1
        self._notify()
        try:
            while self.closed is None:
                job = queue.pop_queued()
                if job is not None:
                    self._dispatch(job, replica)
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return job
                await queue.lot.park()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return None
        finally:
            queue.polling -= 1
            self._notify()

    def take_nowait(self, runtime: Runtime, replica: str = "") -> Job | None:
        """The next job for `runtime` if one is queued right now (dispatched, as `take` returns
        it), else None: the poll route's fast path, with no waiting to cancel."""
        if self.closed is not None:
            return None
        queue = self._queues.get(runtime.runtime_id)
        if queue is None or not queue.jobs:
            return None
        job = queue.pop_queued()
        if job is None:
            return None
        runtime.last_poll_at = self.clock.now()
        self._dispatch(job, replica)
        return job

    def give_back(self, job: Job) -> None:
        """A job `take` returned could not be delivered: back to the front of its queue."""
        if job.state is not JobState.RUNNING:
            return
        pipe = self._pipes.get(job.job_id)
        if pipe is not None and pipe.delivered:
            # Part of a result already reached the caller; a second run cannot continue it.
            self._close_pipe(job)
        self.jobs.transition(job, JobEvent.RETURN, self.clock.now())
        self._notify()
        if self.closed is None:
            self._queue(job.runtime_id).put(job, front=True)

    def begin_upload(
        self, runtime: Runtime, job_id: str, declared_length: int | None
    ) -> ResultUpload:
        """Start receiving a result (NotFound: another runtime's job; Conflict: a second result)."""
        job = self.jobs.get(job_id)
        if job.runtime_id != runtime.runtime_id:
            raise NotFound(
                "not_found",
                f"Unknown job '{job_id}' for runtime '{runtime.runtime_id}'.",
                {"jobId": job_id},
            )
        dispatches = job.dispatch_count
        decision = self.jobs.begin_result(job, self.clock.now())
        if job.dispatch_count != dispatches:
            self._push_deadline(
                self._job_deadlines,
                (trio.current_time() + self.limits.job_timeout, job.job_id, job.dispatch_count),
            )
        if decision is ResultDecision.DISCARD:
            log.info("discarding a late result for job %s (%s)", job.job_id, job.state.value)
            return ResultUpload(self, job, None, declared_length, discard=True)
        return ResultUpload(self, job, self._pipes.get(job.job_id), declared_length, discard=False)

    def restart(self, runtime: Runtime, replica: str = "") -> list[str]:
        """The module behind `runtime` (this replica path) restarted: its unfinished jobs are
        failed, or re-queued when the runtime's `on_restart` says so. Returns their ids."""
        jobs = self.jobs.running_on(runtime.runtime_id, replica)
        for job in jobs:
            self._end_running(
                job,
                runtime,
                FailureKind.MODULE_RESTARTED,
                f"The compute module of runtime '{runtime.runtime_id}' restarted while running "
                "the job.",
            )
        return [job.job_id for job in jobs]

    def runtime_reset(self, runtime: Runtime) -> list[str]:
        """The runtime's session was re-created: its dispatched jobs end as on a restart."""
        jobs = self.jobs.running_on(runtime.runtime_id)
        for job in jobs:
            self._end_running(
                job,
                runtime,
                FailureKind.RUNTIME_RESET,
                f"Runtime '{runtime.runtime_id}' was reset while running the job.",
            )
        return [job.job_id for job in jobs]

    def _end_running(self, job: Job, runtime: Runtime, kind: FailureKind, message: str) -> None:
        if runtime.on_restart is OnRestart.REQUEUE:
            self.give_back(job)
        else:
            self._finish(job, JobEvent.FAIL, kind, message)

    # Closing ------------------------------------------------------------------------------------

    def close(self, kind: FailureKind) -> None:
        """Answer every waiter now: polls end (204), synchronous callers get `kind` (503)."""
        if self.closed is not None:
            return
        self.closed = kind
        for queue in self._queues.values():
            queue.lot.unpark_all()
        for pipe in self._pipes.values():
            pipe.send_channel.close()
        self._pipes.clear()
        self._wake.set()
        self._notify()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds; it is checked after every job state change and
        every poll that starts or ends (for tests, fixtures and tools; nothing polls)."""
        await trio.lowlevel.checkpoint()
        while not condition():
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # Deadlines ----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep job timeouts, queue timeouts and retention until the broker is closed."""
        task_status.started()
        while self.closed is None:
            with trio.move_on_at(self._next_deadline()):
                await self._wake.wait()
            self._wake = trio.Event()
            self.sweep(trio.current_time())

    def _next_deadline(self) -> float:
        heads = [
            queue[0][0]
            for queue in (self._job_deadlines, self._queue_deadlines, self._retention)
            if queue
        ]
        return min(heads, default=math.inf)

    def _push_deadline(self, queue: deque[Any], entry: tuple[Any, ...]) -> None:
        if not queue:
            self._wake.set()
        queue.append(entry)

    def sweep(self, now: float) -> None:
        """End everything whose deadline (trio time) has passed."""
        while self._job_deadlines and self._job_deadlines[0][0] <= now:
            _, job_id, dispatch_count = self._job_deadlines.popleft()
            job = self.jobs.jobs.get(job_id)
            if (
                job is not None
                and job.state is JobState.RUNNING
                and job.dispatch_count == dispatch_count
            ):
                self._finish(
                    job,
                    JobEvent.FAIL,
                    FailureKind.JOB_TIMEOUT,
                    f"Runtime '{job.runtime_id}' produced no complete result within the job "
                    f"timeout ({self.limits.job_timeout:g} s).",
                )
        while self._queue_deadlines and self._queue_deadlines[0][0] <= now:
            _, job_id = self._queue_deadlines.popleft()
            job = self.jobs.jobs.get(job_id)
            if job is not None and job.state is JobState.QUEUED:
                self._finish(
                    job,
                    JobEvent.CANCEL,
                    FailureKind.QUEUE_TIMEOUT,
                    f"No runtime took the job within the queue timeout "
                    f"({self.limits.queue_timeout:g} s).",
                )
        forgot = False
        while self._retention and self._retention[0][0] <= now:
            _, job_id = self._retention.popleft()
            self.jobs.forget(job_id)
            forgot = True
        if forgot:
            # Waiters on the job table (wait_until) see jobs leave it, not only change state.
            self._notify()

    # Internals ----------------------------------------------------------------------------------

    def _queue(self, runtime_id: str) -> RuntimeQueue:
        queue = self._queues.get(runtime_id)
        if queue is None:
            queue = self._queues[runtime_id] = RuntimeQueue()
        return queue

    def _dispatch(self, job: Job, replica: str) -> None:
        self.jobs.transition(job, JobEvent.DISPATCH, self.clock.now(), replica=replica)
        self._notify()
        self._push_deadline(
            self._job_deadlines,
            (trio.current_time() + self.limits.job_timeout, job.job_id, job.dispatch_count),
        )

    def _finish(self, job: Job, event: JobEvent, kind: FailureKind, message: str) -> None:
        failure = Failure(kind, message, self.randomness.uuid())
        was_queued = job.state is JobState.QUEUED
        self.jobs.transition(job, event, self.clock.now(), failure=failure)
        if was_queued:
            self._queue(job.runtime_id).ended_while_waiting()
        self._ended(job)

    def _complete(self, job: Job, result: JobResult, failure_message: str | None) -> None:
        forgotten = self.jobs.finish_result(
            job, result, failure_message, self.clock.now(), self.randomness.uuid()
        )
        if forgotten is None:
            log.info("discarding a result for job %s, which ended meanwhile", job.job_id)
            return
        self._ended(job)

    def _ended(self, job: Job) -> None:
        self._notify()
        self._close_pipe(job)
        self._push_deadline(
            self._retention, (trio.current_time() + self.limits.retention_seconds, job.job_id)
        )
        self._ended_since_compaction += 1
        if self._ended_since_compaction >= COMPACT_EVERY:
            self._compact_deadlines()

    def _compact_deadlines(self) -> None:
        """Drop the queue and job deadlines of jobs that no longer need them (they ended, or
        were dispatched again), so the deques hold live jobs, not every job of the last
        `queue_timeout` seconds. Filtering keeps them in deadline order."""
        self._ended_since_compaction = 0
        table = self.jobs.jobs
        self._queue_deadlines = deque(
            entry
            for entry in self._queue_deadlines
            if (job := table.get(entry[1])) is not None and job.state is JobState.QUEUED
        )
        self._job_deadlines = deque(
            entry
            for entry in self._job_deadlines
            if (job := table.get(entry[1])) is not None
            and job.state is JobState.RUNNING
            and job.dispatch_count == entry[2]
        )

    def _close_pipe(self, job: Job) -> None:
        """End the caller's stream; the caller then reads the job's state."""
        pipe = self._pipes.pop(job.job_id, None)
        if pipe is not None:
            pipe.send_channel.close()

    # Inspection ---------------------------------------------------------------------------------

    def polling(self, runtime_id: str) -> int:
        queue = self._queues.get(runtime_id)
        return 0 if queue is None else queue.polling

    def waiting(self, runtime_id: str) -> int:
        queue = self._queues.get(runtime_id)
        return 0 if queue is None else queue.waiting()

    def statistics(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs.counts(),
            "pollsWaiting": sum(queue.polling for queue in self._queues.values()),
            "callersWaiting": len(self._pipes),
            "retainedResultBytes": self.jobs.retained_bytes,
        }
