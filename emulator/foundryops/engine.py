"""The FoundryOps engine (trio): snapshot indexes, the job runner and callback deliveries.

Owns `Engine`: it builds each snapshot's `MatchIndex` once in a worker thread (callers of the
same snapshot wait on one build; the most recent `INDEX_CACHE` indexes are kept), runs batch
and file jobs with matching and file parsing in worker threads (never on the event loop), at
most the tier's concurrent jobs per key, with progress recorded after every batch of rows
(several times a second), charges credits, stores results, and delivers the signed callback
with retries and exponential backoff. Retention sweeps run every minute on the injected clock.
Every task has the engine's nursery as its owner. Imports trio; nothing from quart or yaml.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from ..platform.clock import Clock
from . import delivery
from .core.artifacts import Artifact
from .core.batch import FileOutcome, Stopped, batch_results, match_file
from .core.credits import Charge
from .core.datasets import CheckedRows, Snapshot, iso
from .core.errors import FoundryOpsError
from .core.files import CONTENT_TYPES, count_rows, detect_format
from .core.generate import GENERATED_SCHEMA, company_rows
from .core.ids import IdFactory
from .core.jobs import (
    Job,
    JobError,
    JobEvent,
    JobStatus,
    apply,
    eta_seconds,
    percentage,
    record_progress,
)
from .core.matcher import MatchIndex, columns_for, project
from .core.schema import RowCheck, Schema
from .core.state import OpsState
from .core.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    MAX_ATTEMPTS,
    SIGNATURE_HEADER,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    host_allowed,
    retry_delay,
    signature,
)
from .core.webhooks import apply as apply_delivery

INDEX_CACHE = 4
WORKER_THREADS = 2
DELIVERY_TIMEOUT = 10.0
SWEEP_INTERVAL = 60.0

Sender = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]


@attrs.define
class _IndexBuild:
    done: trio.Event = attrs.field(factory=trio.Event)
    index: MatchIndex | None = None
    error: BaseException | None = None


def job_json(job: Job, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "job_id": job.job_id,
        "kind": job.kind,
        "status": job.status.value,
        "snapshot_id": job.snapshot_id,
        "progress": {
            "processed": job.processed,
            "total": job.total,
            "percentage": percentage(job),
        },
        "eta_seconds": eta_seconds(job, now),
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at) if job.started_at is not None else None,
        "completed_at": iso(job.finished_at) if job.finished_at is not None else None,
        "poll_url": f"/api/v2/jobs/{job.job_id}",
        "results_url": f"/api/v2/jobs/{job.job_id}/results",
    }
    if job.status is JobStatus.COMPLETED:
        out["matched"] = job.matched
    if job.output_format is not None:
        out["output_format"] = job.output_format
    if job.error is not None:
        out["error"] = {
            "code": job.error.code,
            "message": job.error.message,
            "details": job.error.details,
        }
    return out


@attrs.define(eq=False)
class Engine:
    state: OpsState
    clock: Clock
    ids: IdFactory
    workdir: Path
    callback_secret: str = attrs.field(repr=False)
    allowed_hosts: tuple[str, ...]
    sender: Sender = delivery.post
    _nursery: trio.Nursery | None = None
    _indexes: OrderedDict[str, _IndexBuild] = attrs.field(factory=OrderedDict)
    # Per API key: jobs waiting for a slot (FIFO), jobs running, and the tier's limit.
    _waiting: dict[str, deque[tuple[Job, Any]]] = attrs.field(factory=dict)
    _running: dict[str, int] = attrs.field(factory=dict)
    _limits: dict[str, int] = attrs.field(factory=dict)
    _threads: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(WORKER_THREADS)
    )
    _stop: threading.Event = attrs.field(factory=threading.Event)
    # Jobs and deliveries that finished (tests wait on these instead of sleeping).
    finished: trio.Condition = attrs.field(factory=trio.Condition)
    index_builds: int = 0
    # Seconds before the first retry of a callback (doubling after each failure).
    retry_base: float = 1.0

    # Lifecycle ----------------------------------------------------------------------------------

    async def run(
        self,
        generated: tuple[tuple[str, str | None, int, int, bool], ...] = (),
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Build generated datasets (in a thread), then serve jobs and sweeps until cancelled."""
        for dataset_id, snapshot_id, count, seed, active in generated:
            await self.generate_dataset(dataset_id, snapshot_id, count, seed, active)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sweeper)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._stop.set()

    def stop_nowait(self) -> None:
        """Tell worker threads to stop at their next batch (shutdown, reset)."""
        self._stop.set()

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            self.state.sweep(self.clock.now())

    def generate_nowait(
        self, dataset_id: str, snapshot_id: str | None, count: int, seed: int, active: bool
    ) -> None:
        """Generate a dataset in the background (after a reset)."""
        if self._nursery is not None:
            self._nursery.start_soon(
                self.generate_dataset, dataset_id, snapshot_id, count, seed, active
            )

    async def generate_dataset(
        self, dataset_id: str, snapshot_id: str | None, count: int, seed: int, active: bool
    ) -> None:
        """A seeded `generate: N` dataset: rows made in a worker thread, then one snapshot."""
        dataset = self.state.datasets.datasets[dataset_id]

        def build() -> tuple[tuple[object, ...], ...]:
            return tuple(company_rows(count, seed))

        rows = await trio.to_thread.run_sync(build, limiter=self._threads)
        check = RowCheck(Schema.from_json(GENERATED_SCHEMA), accepted=len(rows))
        self.state.datasets.commit(
            dataset, CheckedRows(rows, (), check), self.clock.now(), snapshot_id=snapshot_id
        )
        if active:
            self.state.datasets.activate(dataset_id, dataset.snapshot_ids[-1])

    # Indexes ------------------------------------------------------------------------------------

    async def index_for(self, snapshot: Snapshot) -> MatchIndex:
        """The snapshot's index, built once in a worker thread; concurrent callers share it."""
        build = self._indexes.get(snapshot.snapshot_id)
        if build is None:
            build = _IndexBuild()
            self._indexes[snapshot.snapshot_id] = build
            while len(self._indexes) > INDEX_CACHE:
                oldest, entry = next(iter(self._indexes.items()))
                if not entry.done.is_set():
                    break
                del self._indexes[oldest]
            columns = columns_for(snapshot.schema.names)

            def make() -> MatchIndex:
                return MatchIndex.build(snapshot.snapshot_id, project(snapshot.rows(), columns))

            try:
                build.index = await trio.to_thread.run_sync(make, limiter=self._threads)
                self.index_builds += 1
            except BaseException as error:
                # A cancelled or failed build is forgotten so the next caller tries again.
                self._indexes.pop(snapshot.snapshot_id, None)
                build.error = error
                raise
            finally:
                build.done.set()
        else:
            self._indexes.move_to_end(snapshot.snapshot_id)
            await build.done.wait()
            if build.index is None:
                return await self.index_for(snapshot)
        assert build.index is not None
        return build.index

    def index_nowait(self, snapshot: Snapshot) -> MatchIndex | None:
        """The snapshot's index if it is built (no wait: the hot path of `match/record`)."""
        build = self._indexes.get(snapshot.snapshot_id)
        if build is None or build.index is None:
            return None
        self._indexes.move_to_end(snapshot.snapshot_id)
        return build.index

    def forget_indexes_nowait(self) -> None:
        """Drop every finished index (after a restore replaced snapshots)."""
        for snapshot_id in [k for k, v in self._indexes.items() if v.done.is_set()]:
            del self._indexes[snapshot_id]

    def warm_nowait(self, snapshot: Snapshot) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self.index_for, snapshot)

    # Jobs ---------------------------------------------------------------------------------------

    def start_job_nowait(self, job: Job, tier_concurrency: int, work: Any) -> None:
        """Queue `job`; it starts when its key has fewer than `tier_concurrency` running jobs.

        Jobs of one key start in the order they were submitted (a FIFO per key, so the order
        never depends on how trio happens to schedule new tasks)."""
        if self._nursery is None:
            raise RuntimeError("the engine is not running")
        self.state.jobs.add(job)
        self._limits[job.key_id] = tier_concurrency
        self._waiting.setdefault(job.key_id, deque()).append((job, work))
        self._pump(job.key_id)

    def _pump(self, key_id: str) -> None:
        waiting = self._waiting.get(key_id)
        assert self._nursery is not None
        while waiting and self._running.get(key_id, 0) < self._limits[key_id]:
            job, work = waiting.popleft()
            # The slot is taken now (so the order holds); the job starts when its task runs.
            self._running[key_id] = self._running.get(key_id, 0) + 1
            self._nursery.start_soon(self._run_job, job, work)

    async def _run_job(self, job: Job, work: Any) -> None:
        try:
            apply(job, JobEvent.START, self.clock.now())
            await self._work(job, work)
        finally:
            self._running[job.key_id] -= 1
            self._pump(job.key_id)
        async with self.finished:
            self.finished.notify_all()
        if job.callback_url is not None:
            await self._deliver(job)

    async def _work(self, job: Job, work: Any) -> None:
        """Run the job's work; its outcome is the job's last transition."""
        try:
            await work(job)
        except FoundryOpsError as error:
            apply(
                job,
                JobEvent.FAIL,
                self.clock.now(),
                error=JobError(error.code, error.message, dict(error.details)),
            )
        except Exception as error:  # a bug: the job fails and says so, the engine lives
            apply(
                job,
                JobEvent.FAIL,
                self.clock.now(),
                error=JobError("INTERNAL", f"The job failed: {type(error).__name__}."),
            )
        else:
            apply(job, JobEvent.COMPLETE, self.clock.now())

    def batch_work(
        self, snapshot: Snapshot, records: list[dict[str, object]], options: Any
    ) -> Callable[[Job], Awaitable[None]]:
        async def work(job: Job) -> None:
            index = await self.index_for(snapshot)
            record_progress(job, 0, self.clock.now(), total=len(records))
            results, matched = await trio.to_thread.run_sync(
                batch_results, snapshot, index, records, options, limiter=self._threads
            )
            job.results = results
            job.matched = matched

        return work

    def file_work(
        self,
        snapshot: Snapshot,
        source: Path,
        options: Any,
        output_format: str,
        charge: Callable[[int], Charge],
    ) -> Callable[[Job], Awaitable[None]]:
        async def work(job: Job) -> None:
            fmt = await trio.to_thread.run_sync(detect_format, source, limiter=self._threads)
            total = await trio.to_thread.run_sync(count_rows, source, fmt, limiter=self._threads)
            record_progress(job, 0, self.clock.now(), total=total)
            taken = charge(total)
            job.credits_charged = taken.cost
            index = await self.index_for(snapshot)
            token = trio.lowlevel.current_trio_token()
            output = self.workdir / f"{job.job_id}.{output_format}"

            def report(processed: int) -> None:
                # Queued on the loop without waiting for it (the worker does not stop for a
                # round trip every 1,000 rows); the queue is FIFO, and trio delivers the
                # thread's result through it too, so progress lands in order and before the
                # job completes.
                token.run_sync_soon(self._progress, job, processed)

            try:
                outcome: FileOutcome = await trio.to_thread.run_sync(
                    match_file,
                    source,
                    fmt,
                    snapshot,
                    index,
                    options,
                    output,
                    output_format,
                    report,
                    self._stop.is_set,
                    limiter=self._threads,
                )
            except (FoundryOpsError, OSError) as error:
                self.state.ledger.refund(taken)
                job.credits_charged = 0.0
                if isinstance(error, Stopped | FoundryOpsError):
                    raise
                raise FoundryOpsError("INTERNAL", f"Writing results failed: {error}") from None
            now = self.clock.now()
            artifact_id = self.ids.new("art")
            self.state.artifacts.add(
                Artifact(
                    artifact_id=artifact_id,
                    kind="results",
                    content_type=CONTENT_TYPES[output_format],
                    filename=f"{job.job_id}.{output_format}",
                    created_at=now,
                    expires_at=now + self.state.artifacts.retention_seconds,
                    path=outcome.path,
                )
            )
            job.results_artifact_id = artifact_id
            job.matched = outcome.matched

        return work

    def _progress(self, job: Job, processed: int) -> None:
        """A file job's progress, on the loop; ignored once the job left RUNNING (an error in
        a `run_sync_soon` callback would end the whole loop)."""
        if job.status is JobStatus.RUNNING:
            record_progress(job, processed, self.clock.now())

    async def wait_job_finished(self, job_id: str) -> Job:
        """Until the job is completed or failed (tests, the CLI)."""
        async with self.finished:
            while not self.state.jobs.get(job_id).status.finished:
                await self.finished.wait()
        return self.state.jobs.get(job_id)

    # Callbacks ----------------------------------------------------------------------------------

    def callback_body(self, job: Job, delivery_id: str) -> bytes:
        payload = {
            "event": f"job.{job.status.value}",
            "delivery_id": delivery_id,
            "job": job_json(job, self.clock.now()),
        }
        return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()

    async def _deliver(self, job: Job) -> None:
        assert job.callback_url is not None
        record = Delivery(
            delivery_id=self.ids.new("dlv"),
            job_id=job.job_id,
            url=job.callback_url,
            created_at=self.clock.now(),
        )
        self.state.deliveries[record.delivery_id] = record
        try:
            if not host_allowed(record.url, self.allowed_hosts):
                apply_delivery(record, DeliveryEvent.BLOCK, self.clock.now())
                return
            body = self.callback_body(job, record.delivery_id)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "foundryops-emulator",
                SIGNATURE_HEADER: signature(self.callback_secret, body),
                DELIVERY_HEADER: record.delivery_id,
                EVENT_HEADER: f"job.{job.status.value}",
            }
            while record.status is DeliveryStatus.PENDING:
                status_code: int | None = None
                problem: str | None = None
                with trio.move_on_after(DELIVERY_TIMEOUT) as scope:
                    try:
                        status_code = await self.sender(record.url, body, headers)
                    except (OSError, trio.BrokenResourceError) as error:
                        problem = f"{type(error).__name__}: {error}"
                    except Exception as error:  # protocol errors from a broken receiver
                        problem = f"{type(error).__name__}"
                if scope.cancelled_caught:
                    problem = f"no answer within {DELIVERY_TIMEOUT:g} s"
                now = self.clock.now()
                if status_code is not None and 200 <= status_code < 300:
                    apply_delivery(record, DeliveryEvent.SUCCEED, now, status_code=status_code)
                    break
                problem = problem or f"HTTP {status_code}"
                if record.attempts + 1 >= MAX_ATTEMPTS:
                    apply_delivery(
                        record, DeliveryEvent.GIVE_UP, now, status_code=status_code, error=problem
                    )
                    break
                apply_delivery(
                    record, DeliveryEvent.RETRY, now, status_code=status_code, error=problem
                )
                await trio.sleep(retry_delay(record.attempts, self.retry_base))
        finally:
            async with self.finished:
                self.finished.notify_all()

    async def wait_delivery_finished(self, job_id: str) -> Delivery:
        async with self.finished:
            while True:
                found = [d for d in self.state.deliveries.values() if d.job_id == job_id]
                if found and found[-1].status is not DeliveryStatus.PENDING:
                    return found[-1]
                await self.finished.wait()
