"""The trio engine: DAG execution, concurrency bounds, retries, timeouts, cancellation, fan-out.

Time is trio's (autojump_clock), so latencies and backoffs cost nothing and are exact.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from fabric_support import CAROL, dev, make_world

from emulator.fabric.core.config import EngineConfig
from emulator.fabric.core.errors import RateLimited
from emulator.fabric.core.events import DomainEvent, EventDraft
from emulator.fabric.core.jobs import JobStatus
from emulator.fabric.core.providers import ECHO, Catalog, Latency, ProviderSpec
from emulator.fabric.core.workflows import NodeStatus, RunStatus, WorkflowRun
from emulator.fabric.engine import Engine

BASE = 1_800_000_000.0


class TrioWallClock:
    """The plane's clock follows trio's, so autojumped time shows in timestamps."""

    def now(self) -> float:
        return BASE + trio.current_time()


SLOW = ProviderSpec("slow", ("text",), ("slow-1",), latency=Latency(1000, 1000))
FLAKY = ProviderSpec("flaky", ("text",), ("flaky-1",), failure_rate=1.0)


def _engine(**config: Any) -> tuple[Engine, Any]:
    world = make_world(catalog=Catalog((ECHO, SLOW, FLAKY)), clock=TrioWallClock())
    return Engine(world.plane, EngineConfig(**config)), world


def _node(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "operation": "ai.generate", "runtime": "provider", **extra}


async def _start(engine: Engine, world: Any, nodes: list[dict[str, Any]]) -> WorkflowRun:
    definition, _ = engine.plane.upsert_definition(
        dev(CAROL), {"name": "w", "organization_id": world.acme, "nodes": nodes}
    )
    run, _ = engine.plane.create_run(
        dev(CAROL), {"workflow_definition_id": definition.id, "context": {"q": "hello there"}}
    )
    engine.plane.start_run(dev(CAROL), run.id)
    engine.executor.submit_nowait(run)
    return run


async def _until_done(engine: Engine, run: WorkflowRun) -> None:
    """Wait for the run's terminal event (checked after subscribing, so none is missed)."""
    last = engine.plane.events.last_sequence
    with engine.hub.subscribe(lambda e: e.terminal_for_run, last, topic=run.id) as sub:
        if not run.status.terminal:
            await sub.receive()


async def test_a_job_is_a_single_node_run(autojump_clock: trio.abc.Clock) -> None:
    engine, world = _engine()
    seen: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        with engine.hub.subscribe(lambda e: True, engine.plane.events.last_sequence) as sub:
            job, _ = engine.plane.submit_job(
                dev(CAROL),
                {"modality": "text", "input": {"prompt": "a b"}, "organization_id": world.acme},
            )
            engine.executor.submit_nowait(engine.plane.runs[job.workflow_run_id])
            while "job.completed" not in seen:
                seen += [event.name for event in await sub.receive_batch()]
        nursery.cancel_scope.cancel()
    assert seen == [
        "job.created",
        "workflow.run.created",
        "workflow.run.started",
        "workflow.node.ready",
        "workflow.node.started",
        "job.started",
        "workflow.node.completed",
        "workflow.run.completed",
        "job.completed",
    ]
    assert job.status is JobStatus.COMPLETED
    assert job.output == {"text": "a b"}
    assert job.usage == {"input_tokens": 2, "output_tokens": 2, "estimated_cost_usd": 0.0}
    assert [r.job_id for r in engine.plane.usage.records] == [job.id]


@pytest.mark.parametrize(("concurrency", "elapsed"), [(1, 3.0), (2, 2.0), (3, 1.0)])
async def test_independent_nodes_run_concurrently_within_the_bound(
    autojump_clock: trio.abc.Clock, concurrency: int, elapsed: float
) -> None:
    engine, world = _engine(per_run_concurrency=concurrency)
    slow = {"modality": "text", "model": "slow-1"}
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        start = trio.current_time()
        run = await _start(engine, world, [_node(k, config=slow) for k in "abc"])
        await _until_done(engine, run)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert run.status is RunStatus.COMPLETED
    assert took == pytest.approx(elapsed, abs=0.01)


async def test_dependencies_order_nodes_and_outputs_flow_through_context(
    autojump_clock: trio.abc.Clock,
) -> None:
    engine, world = _engine()
    nodes = [
        _node("first", inputs={"prompt": "$context.q"}, outputs={"text": "$context.a.b"}),
        _node(
            "second",
            inputs={"prompt": "$context.a.b"},
            outputs={"text": "$context.out"},
            depends_on=["first"],
        ),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        run = await _start(engine, world, nodes)
        await _until_done(engine, run)
        nursery.cancel_scope.cancel()
    assert run.status is RunStatus.COMPLETED
    assert run.output == {"q": "hello there", "a": {"b": "hello there"}, "out": "hello there"}
    assert run.progress().percentage == 100.0
    first, second = run.nodes["first"], run.nodes["second"]
    assert first.completed_at is not None
    assert second.started_at is not None
    assert first.completed_at <= second.started_at


async def test_retries_back_off_then_fail_and_skip_dependents(
    autojump_clock: trio.abc.Clock,
) -> None:
    engine, world = _engine(retry_backoff=0.5)
    nodes = [
        _node("bad", config={"model": "flaky-1", "retries": 2}),
        _node("after", depends_on=["bad"]),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        start = trio.current_time()
        run = await _start(engine, world, nodes)
        await _until_done(engine, run)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert run.status is RunStatus.FAILED
    assert run.nodes["bad"].attempts == 3
    assert took == pytest.approx(0.5 + 1.0, abs=0.01)  # backoff 0.5 s, then 1.0 s
    assert run.nodes["after"].status is NodeStatus.SKIPPED
    assert run.error == "node bad failed: flaky: scripted failure"


async def test_a_node_timeout_fails_the_attempt(autojump_clock: trio.abc.Clock) -> None:
    engine, world = _engine()
    nodes = [_node("n", config={"model": "slow-1", "timeout_ms": 250})]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        start = trio.current_time()
        run = await _start(engine, world, nodes)
        await _until_done(engine, run)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert run.status is RunStatus.FAILED
    assert run.nodes["n"].error == "timed out after 0.25s"
    assert took == pytest.approx(0.25, abs=0.01)


async def test_cancel_reaches_running_nodes(autojump_clock: trio.abc.Clock) -> None:
    engine, world = _engine()
    nodes = [
        _node("long", config={"params": {"delay_ms": 60_000}}),
        _node("next", depends_on=["long"]),
    ]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        run = await _start(engine, world, nodes)
        await trio.testing.wait_all_tasks_blocked()
        assert run.nodes["long"].status is NodeStatus.RUNNING
        assert engine.executor.statistics()["running_nodes"] == 1
        start = trio.current_time()
        engine.plane.cancel_run(dev(CAROL), run.id)
        engine.executor.cancel_nowait(run.id)
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == start  # nobody waited out the 60 s
        assert engine.executor.statistics() == {"queued": 0, "active_runs": 0, "running_nodes": 0}
        nursery.cancel_scope.cancel()
    assert run.status is RunStatus.CANCELLED
    assert {n.status for n in run.nodes.values()} == {NodeStatus.SKIPPED}
    names = [e.name for e in engine.plane.events if e.run_id == run.id]
    assert "workflow.node.completed" not in names
    assert names[-1] == "workflow.run.cancelled"


async def test_every_run_not_finished_is_counted_queued_or_active(
    autojump_clock: trio.abc.Clock,
) -> None:
    # One slot: the second run is taken off the queue and waits for the slot; it must still
    # count as queued (a benchmark waits for the executor to be idle by these counts).
    engine, world = _engine(max_active_runs=1)
    slow = [_node("only", config={"params": {"delay_ms": 1000}})]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        first = await _start(engine, world, slow)
        second = await _start(engine, world, slow)
        await trio.testing.wait_all_tasks_blocked()
        assert engine.executor.statistics() == {"queued": 1, "active_runs": 1, "running_nodes": 1}
        await _until_done(engine, first)
        await _until_done(engine, second)
        await trio.testing.wait_all_tasks_blocked()
        assert engine.executor.statistics() == {"queued": 0, "active_runs": 0, "running_nodes": 0}
        nursery.cancel_scope.cancel()


async def test_a_full_queue_is_rate_limited() -> None:
    engine, world = _engine(queue_limit=2)
    for _ in range(2):
        job, _ = engine.plane.submit_job(
            dev(CAROL), {"modality": "text", "input": {}, "organization_id": world.acme}
        )
        engine.executor.submit_nowait(engine.plane.runs[job.workflow_run_id])
    with pytest.raises(RateLimited):
        engine.executor.ensure_room()
    await trio.lowlevel.checkpoint()


async def test_a_slow_subscriber_is_dropped_without_slowing_anyone() -> None:
    engine, _ = _engine(subscriber_buffer=4)
    hub = engine.hub
    with (
        hub.subscribe(lambda e: True, 0) as slow,
        hub.subscribe(lambda e: True, 0) as fast,
        hub.subscribe(lambda e: e.payload["i"] % 2 == 0, 0) as even,
    ):
        received: list[DomainEvent] = []
        evens: list[DomainEvent] = []
        for index in range(10):
            engine.plane.emit(EventDraft("job.created", payload={"i": index}))
            received += fast.receive_ready_nowait(10)  # fast keeps up
            if index % 3 == 2:  # reads every third event: never 4 behind
                evens += even.receive_ready_nowait(10)
            if index == 2:
                assert [e.payload["i"] for e in slow.receive_ready_nowait(2)] == [0, 1]
        evens += even.receive_ready_nowait(10)
        assert [e.payload["i"] for e in received] == list(range(10))
        assert [e.payload["i"] for e in evens] == [0, 2, 4, 6, 8]
        # slow read up to 1, then 8 more arrived: more than the ring holds, so it is dropped
        # and gets nothing further (it resumes from the event log with Last-Event-ID).
        with pytest.raises(trio.EndOfChannel):
            await slow.receive_batch()
        assert slow.overflowed
        assert not fast.overflowed
        assert hub.statistics() == {
            "subscribers": 2,
            "written_by_hub": 0,
            "dropped_for_overflow": 1,
        }
    assert hub.statistics() == {"subscribers": 0, "written_by_hub": 0, "dropped_for_overflow": 1}


async def test_replay_and_live_meet_without_gap_or_duplicate() -> None:
    engine, _ = _engine()
    first = [engine.plane.emit(EventDraft("job.created", payload={"i": i})) for i in range(3)]
    upto = engine.plane.events.last_sequence
    with engine.hub.subscribe(lambda e: True, upto) as sub:
        engine.plane.emit(EventDraft("job.created", payload={"i": 3}))
        # A resume after event 0 (its Last-Event-ID) replays 1 and 2, then goes live.
        after = engine.plane.events.resume_point(first[0].id)
        replayed = engine.replay(lambda e: True, after=after, upto=sub.start_sequence)
        live = sub.receive_ready_nowait(10)
    assert [e.payload["i"] for e in replayed + live] == [1, 2, 3]
    await trio.lowlevel.checkpoint()


class Boom:
    """A provider runner with a bug in it."""

    async def call(self, plan: Any) -> Any:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("bug")


async def test_a_bug_fails_its_run_and_spares_the_executor(autojump_clock: trio.abc.Clock) -> None:
    engine, world = _engine()
    healthy = engine.executor.provider
    engine.executor.provider = Boom()  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        broken = await _start(engine, world, [_node("a"), _node("b", depends_on=["a"])])
        await _until_done(engine, broken)
        engine.executor.provider = healthy
        fine = await _start(engine, world, [_node("a")])
        await _until_done(engine, fine)
        nursery.cancel_scope.cancel()
    assert broken.status is RunStatus.FAILED
    assert broken.error == "node a failed: internal error in the emulator"
    assert broken.nodes["b"].status is NodeStatus.SKIPPED
    assert fine.status is RunStatus.COMPLETED
