"""Fabric's trio engine: the DAG executor, provider calls in time, and the wiring to the
event fan-out (`fanout.EventHub`).

Owns `Engine` (the executor and the hub on one control plane), `Executor` (a bounded FIFO
queue of runs; each run's DAG runs independent nodes concurrently, bounded per run and
globally; retries with exponential backoff; per-node timeouts as cancel scopes; cancelling a
run cancels the scope its running nodes live in; a job is a single-node run; a bug fails its
run, never the executor) and `ProviderRunner` (waits out a call's planned latency and paces
streamed chunks on trio's clock). All state changes go through `core.plane.ControlPlane`.
Imports trio and the Fabric core; nothing from quart, yaml or the API layer.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable

import attrs
import trio

from .core.config import EngineConfig
from .core.errors import FabricError, ProviderFailed, RateLimited
from .core.events import DomainEvent
from .core.plane import ControlPlane
from .core.providers import CallPlan
from .core.workflows import NodeStatus, RunStatus, WorkflowRun
from .fanout import EventFilter, EventHub

__all__ = ["Engine", "EngineConfig", "EventFilter", "EventHub", "Executor", "ProviderRunner"]
log = logging.getLogger("emulator.fabric.engine")


# Providers ---------------------------------------------------------------------------------


class ProviderRunner:
    """Plays a `CallPlan` out in time."""

    async def call(self, plan: CallPlan) -> CallPlan:
        """Wait the planned latency; raise ProviderFailed if the plan says the call fails."""
        await trio.sleep(plan.delay)
        if plan.failure is not None:
            raise ProviderFailed(plan.failure)
        return plan

    async def stream(self, plan: CallPlan, emit: Callable[[int, str], Awaitable[None]]) -> None:
        """Send each chunk through `emit`, paced by the provider's tokens per second."""
        await trio.sleep(plan.delay)
        if plan.failure is not None:
            raise ProviderFailed(plan.failure)
        for index, chunk in enumerate(plan.chunks):
            if index and plan.chunk_interval:
                await trio.sleep(plan.chunk_interval)
            await emit(index, chunk)


# Execution ---------------------------------------------------------------------------------


def _node_setting(run: WorkflowRun, key: str, name: str) -> float | None:
    value = run.nodes[key].definition.config.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return float(value)


@attrs.define
class Executor:
    plane: ControlPlane
    config: EngineConfig = attrs.field(factory=EngineConfig)
    provider: ProviderRunner = attrs.field(factory=ProviderRunner)
    _send: trio.MemorySendChannel[str] = attrs.field(init=False)
    _receive: trio.MemoryReceiveChannel[str] = attrs.field(init=False)
    _node_limiter: trio.CapacityLimiter = attrs.field(init=False)
    _run_limiter: trio.CapacityLimiter = attrs.field(init=False)
    _scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[str](self.config.queue_limit)
        self._node_limiter = trio.CapacityLimiter(self.config.max_concurrent_nodes)
        self._run_limiter = trio.CapacityLimiter(self.config.max_active_runs)

    def ensure_room(self) -> None:
        """Raise RateLimited before anything is created when the queue is full."""
        if self._send.statistics().current_buffer_used >= self.config.queue_limit:
            raise RateLimited(f"the run queue is full ({self.config.queue_limit} runs)")

    def submit_nowait(self, run: WorkflowRun) -> None:
        """Queue a created job run or a started workflow run (FIFO)."""
        try:
            self._send.send_nowait(run.id)
        except trio.WouldBlock:
            raise RateLimited(f"the run queue is full ({self.config.queue_limit} runs)") from None

    def cancel_nowait(self, run_id: str) -> None:
        """Stop the work of a run the plane has cancelled; queued runs are skipped on pickup."""
        scope = self._scopes.get(run_id)
        if scope is not None:
            scope.cancel()

    def cancel_all(self) -> None:
        """Stop every active run's work (reset, shutdown); queued ids whose run is gone are
        skipped on pickup."""
        for scope in self._scopes.values():
            scope.cancel()

    def statistics(self) -> dict[str, int]:
        """Runs waiting (in the queue, or taken off it and waiting for a slot), runs holding a
        slot (from pickup until their work is over, so there is no moment between the two
        when a run is counted nowhere), and nodes running."""
        limiter = self._run_limiter
        return {
            "queued": self._send.statistics().current_buffer_used
            + limiter.statistics().tasks_waiting,
            "active_runs": limiter.borrowed_tokens,
            "running_nodes": self._node_limiter.borrowed_tokens,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take runs off the queue in order and drive each; cancelled when the service stops."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for run_id in self._receive:
                await self._run_limiter.acquire_on_behalf_of(run_id)
                nursery.start_soon(self._drive_and_release, run_id)
                # Start every other queued run there is room for in this same step: taking
                # one run per scheduler pass capped pickup at one run per pass, and a pass is
                # long when many streams are open (60 runs/s with 1,000 subscribers).
                while self._run_limiter.available_tokens:
                    try:
                        run_id = self._receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._run_limiter.acquire_on_behalf_of_nowait(run_id)
                    nursery.start_soon(self._drive_and_release, run_id)

    async def _drive_and_release(self, run_id: str) -> None:
        try:
            await self._drive(run_id)
        except Exception:
            # A bug must not take the executor (and every other run) down with it: the run
            # fails with an internal error and the executor goes on.
            log.exception("executor failed on run %s", run_id)
            self._abort(run_id)
        finally:
            self._run_limiter.release_on_behalf_of(run_id)

    def _abort(self, run_id: str) -> None:
        run = self.plane.runs.get(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            return
        try:
            for key, node in run.nodes.items():
                if node.status is NodeStatus.RUNNING:
                    self.plane.node_fail(run, key, "internal error in the emulator")
            for key, node in run.nodes.items():
                if node.status in (NodeStatus.PENDING, NodeStatus.READY):
                    self.plane.node_skip(run, key)
            self.plane.run_finish(run)
        except Exception:
            log.exception("could not fail run %s after an executor error", run_id)

    async def _drive(self, run_id: str) -> None:
        run = self.plane.runs.get(run_id)
        if run is None:
            await trio.lowlevel.checkpoint()
            return
        if run.job_id is not None and run.status is RunStatus.PENDING:
            self.plane.run_start(run)
        if run.status is not RunStatus.RUNNING:
            await trio.lowlevel.checkpoint()  # cancelled while queued
            return
        with trio.CancelScope() as scope:
            self._scopes[run.id] = scope
            try:
                if len(run.nodes) == 1:
                    await self._only_node(run)
                else:
                    await self._nodes(run)
            finally:
                del self._scopes[run.id]
        if run.status is RunStatus.RUNNING and run.all_done:
            self.plane.run_finish(run)

    async def _only_node(self, run: WorkflowRun) -> None:
        """A run of one node (every job): the node runs on the run's own task, with no
        nursery, channel or task of its own (a fifth of a job's executor CPU went to them)."""
        for key in run.ready_keys():
            self.plane.node_ready(run, key)
            async with self._node_limiter:
                if run.status is RunStatus.RUNNING:
                    await self._attempts(run, key)

    async def _nodes(self, run: WorkflowRun) -> None:
        """The DAG: every ready node on a task of its own, bounded per run and overall."""
        finished_send, finished_receive = trio.open_memory_channel[str](math.inf)
        per_run = trio.Semaphore(self.config.per_run_concurrency)
        running = 0
        async with trio.open_nursery() as nursery:
            while run.status is RunStatus.RUNNING:
                for key in run.ready_keys():
                    self.plane.node_ready(run, key)
                    running += 1
                    nursery.start_soon(self._node, run, key, per_run, finished_send)
                if running == 0:
                    break
                await finished_receive.receive()
                running -= 1

    async def _node(
        self,
        run: WorkflowRun,
        key: str,
        per_run: trio.Semaphore,
        finished: trio.MemorySendChannel[str],
    ) -> None:
        try:
            async with per_run, self._node_limiter:
                if run.status is not RunStatus.RUNNING:
                    return
                await self._attempts(run, key)
        finally:
            finished.send_nowait(key)

    async def _attempts(self, run: WorkflowRun, key: str) -> None:
        self.plane.node_start(run, key)
        retries = _node_setting(run, key, "retries")
        attempts = 1 + int(self.config.default_retries if retries is None else min(retries, 10))
        timeout_ms = _node_setting(run, key, "timeout_ms")
        timeout = self.config.node_timeout if timeout_ms is None else timeout_ms / 1000.0
        error = "no attempt made"
        for attempt in range(attempts):
            self.plane.node_attempt(run, key)
            try:
                plan = self.plane.catalog.plan(self.plane.node_request(run, key), self.plane.random)
                with trio.move_on_after(timeout) as deadline:
                    await self.provider.call(plan)
                if deadline.cancelled_caught:
                    error = f"timed out after {timeout:g}s"
                else:
                    if run.nodes[key].status is NodeStatus.RUNNING:
                        self.plane.node_complete(run, key, plan)
                    return
            except FabricError as exc:
                error = exc.message
            if attempt + 1 < attempts:
                await trio.sleep(self.config.retry_backoff * (2**attempt))
        if run.nodes[key].status is NodeStatus.RUNNING:
            self.plane.node_fail(run, key, error)


@attrs.define
class Engine:
    """The executor and the hub together, wired to one control plane."""

    plane: ControlPlane
    config: EngineConfig = attrs.field(factory=EngineConfig)
    hub: EventHub = attrs.field(init=False)
    executor: Executor = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.hub = EventHub(self.config.subscriber_buffer, self.config.flush_interval)
        self.executor = Executor(self.plane, self.config)
        self.plane.on_event = self.hub.publish_nowait

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.hub.run)
            await nursery.start(self.executor.run)
            task_status.started()

    def replay(
        self,
        accepts: EventFilter,
        after: int,
        upto: int,
        candidates: Iterable[DomainEvent] | None = None,
    ) -> list[DomainEvent]:
        """Retained events in (after, upto] that `accepts` takes, oldest first; `candidates`
        narrows the search (a job's or run's own events)."""
        pool = self.plane.events.after(after) if candidates is None else candidates
        return [event for event in pool if after < event.sequence <= upto and accepts(event)]
