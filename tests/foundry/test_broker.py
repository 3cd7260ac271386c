"""The trio broker: long-poll hand-off, cancellation safety, replicas, result streams with
backpressure, failure reports, restarts, every timeout (on trio's autojump clock) and closing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing

from emulator.foundry.broker import Broker, BrokerClosed
from emulator.foundry.core.errors import Conflict, NotFound, QueueFull
from emulator.foundry.core.jobs import FailureKind, Job, JobSpec, JobState
from emulator.foundry.core.runtimes import Runtime, RuntimeRegistry
from emulator.foundry.results import ResultPipe
from emulator.foundry.seed import ComputeModulesSeed
from emulator.platform.clock import ManualClock, Randomness
from emulator.platform.seedschema import Node

APP = "ri.foundry.main.deployed-app.agent-loop"
LIMITS = {
    "poll_timeout": 20,
    "execute_timeout": 300,
    "job_timeout": 600,
    "queue_timeout": 900,
    "retention_seconds": 1000,
}


def make_broker(on_restart: str = "fail", **limits: Any) -> Broker:
    seed = ComputeModulesSeed.from_node(
        Node(
            {
                "runtimes": [
                    {"runtime_id": "rt", "module_auth_token": "t", "on_restart": on_restart},
                    {"runtime_id": "other", "module_auth_token": "u"},
                ],
                "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "rt"}],
                "limits": {**LIMITS, **limits},
            }
        )
    )
    runtimes = RuntimeRegistry.from_seed(seed, 0.0, Randomness())
    return Broker.build(runtimes, seed.limits, ManualClock(), Randomness())


@pytest.fixture
async def broker(nursery: trio.Nursery) -> AsyncIterator[Broker]:
    made = make_broker()
    await nursery.start(made.run)
    yield made
    made.close(FailureKind.SHUTDOWN)


def runtime(broker: Broker, runtime_id: str = "rt") -> Runtime:
    return broker.runtimes.get(runtime_id)


def submit(broker: Broker, query: Any = None, *, sync: bool = False) -> Job:
    spec = JobSpec(deployed_app_rid=APP, branch=None, query_type="q", query=query)
    return broker.submit(spec, submitted_by="jane", submitted_by_id="id", sync=sync)


async def upload(broker: Broker, job: Job, *chunks: bytes, length: int | None = None) -> None:
    up = broker.begin_upload(runtime(broker), job.job_id, length)
    for chunk in chunks:
        await up.feed(chunk)
    await up.finish()


async def drain(pipe: ResultPipe) -> bytes:
    return b"".join([chunk async for chunk in pipe.receive_channel])


# Hand-off ----------------------------------------------------------------------------------------


async def test_queued_jobs_go_out_in_order_and_are_dispatched(broker: Broker) -> None:
    first, second = submit(broker, 1), submit(broker, 2)
    assert await broker.take(runtime(broker)) is first
    assert first.state is JobState.RUNNING
    assert first.dispatch_count == 1
    assert await broker.take(runtime(broker), "r2") is second
    assert second.replica == "r2"


async def test_a_parked_poll_gets_a_job_submitted_later(
    broker: Broker, nursery: trio.Nursery
) -> None:
    taken: list[Job | None] = []

    async def poll() -> None:
        taken.append(await broker.take(runtime(broker)))

    nursery.start_soon(poll)
    await trio.testing.wait_all_tasks_blocked()
    assert broker.polling("rt") == 1
    job = submit(broker)
    await trio.testing.wait_all_tasks_blocked()
    assert taken == [job]
    assert broker.polling("rt") == 0


async def test_a_poll_that_times_out_takes_nothing(broker: Broker, autojump_clock: Any) -> None:
    with trio.move_on_after(20) as scope:
        await broker.take(runtime(broker))
    assert scope.cancelled_caught
    job = submit(broker)
    assert await broker.take(runtime(broker)) is job


async def test_a_cancelled_poll_never_consumes_a_job_put_at_the_same_moment(broker: Broker) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        submit(broker)
        await broker.take(runtime(broker))
    assert scope.cancelled_caught
    assert [j.state for j in broker.jobs] == [JobState.QUEUED]


async def test_a_job_not_delivered_goes_back_to_the_front(broker: Broker) -> None:
    first, second = submit(broker), submit(broker)
    taken = await broker.take(runtime(broker))
    assert taken is first
    broker.give_back(first)
    assert first.state is JobState.QUEUED
    assert await broker.take(runtime(broker)) is first
    assert first.dispatch_count == 2
    assert await broker.take(runtime(broker)) is second


async def test_jobs_cancelled_in_a_queue_nobody_polls_do_not_pile_up(broker: Broker) -> None:
    for _ in range(500):
        broker.caller_gone(submit(broker, sync=True), FailureKind.CALLER_LEFT)
    assert len(broker._queue("rt").jobs) <= 65
    waiting = submit(broker)
    assert await broker.take(runtime(broker)) is waiting


async def test_runtimes_do_not_share_queues(broker: Broker) -> None:
    submit(broker)
    with trio.move_on_after(0) as scope:
        await broker.take(runtime(broker, "other"))
    assert scope.cancelled_caught


async def test_replicas_each_job_exactly_once(broker: Broker) -> None:
    seen: dict[str, list[int]] = {}

    async def replica(number: int) -> None:
        while True:
            job = await broker.take(runtime(broker), f"r{number}")
            if job is None:
                return
            seen.setdefault(job.job_id, []).append(number)
            await trio.lowlevel.checkpoint()
            await upload(broker, job, b"ok")

    async with trio.open_nursery() as nursery:
        for number in range(3):
            nursery.start_soon(replica, number)
        jobs = [submit(broker, i) for i in range(300)]
        await trio.testing.wait_all_tasks_blocked()
        broker.close(FailureKind.SHUTDOWN)
    assert sorted(seen) == sorted(job.job_id for job in jobs)
    assert all(len(replicas) == 1 for replicas in seen.values())
    assert len({r[0] for r in seen.values()}) == 3, "every replica took part"
    assert all(job.state is JobState.SUCCEEDED for job in jobs)


async def test_queue_full_is_per_app(nursery: trio.Nursery) -> None:
    small = make_broker(queue_depth=2)
    submit(small)
    submit(small)
    with pytest.raises(QueueFull):
        submit(small)


async def test_unknown_deployed_app() -> None:
    broker = make_broker()
    spec = JobSpec(
        deployed_app_rid="ri.foundry.main.deployed-app.nope", branch=None, query_type="q", query={}
    )
    with pytest.raises(NotFound, match="nope"):
        broker.submit(spec, submitted_by="jane", submitted_by_id="id", sync=False)


# Results -----------------------------------------------------------------------------------------


async def test_a_result_streams_to_the_caller_as_it_arrives(
    broker: Broker, nursery: trio.Nursery
) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    up = broker.begin_upload(runtime(broker), job.job_id, None)
    await up.feed(b'{"step": 1}')
    assert await pipe.receive_channel.receive() == b'{"step": 1}'
    await up.feed(b'{"step": 2}')
    await up.finish()
    assert await drain(pipe) == b'{"step": 2}'
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    assert job.result.body() == b'{"step": 1}{"step": 2}'


async def test_a_slow_caller_holds_back_the_upload(broker: Broker, nursery: trio.Nursery) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    up = broker.begin_upload(runtime(broker), job.job_id, None)
    fed: list[int] = []

    async def feed() -> None:
        for number in range(40):
            await up.feed(b"[%d]" % number)
            fed.append(number)
        await up.finish()

    nursery.start_soon(feed)
    await trio.testing.wait_all_tasks_blocked()
    capacity = len(fed)
    assert 0 < capacity < 40, "the upload must block once the channel is full"
    received = await drain(pipe)
    assert received == b"".join(b"[%d]" % n for n in range(40))
    assert job.state is JobState.SUCCEEDED


async def test_a_failure_report_is_held_back_and_fails_the_job(
    broker: Broker, nursery: trio.Nursery
) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    up = broker.begin_upload(runtime(broker), job.job_id, None)
    await up.feed(b'{"excep')
    await up.feed(b'tion": "boom: Traceback"}')
    with pytest.raises(trio.WouldBlock):
        pipe.receive_channel.receive_nowait()
    await up.finish()
    assert await drain(pipe) == b""
    assert job.state is JobState.FAILED
    assert job.failure is not None
    assert job.failure.message == "boom: Traceback"
    assert job.result is not None
    assert job.result.body() == b'{"exception": "boom: Traceback"}'


async def test_a_body_that_only_looks_like_a_failure_at_first_is_passed_on(broker: Broker) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    await upload(broker, job, b'{"error": "x"}', b'{"error": "y"}')
    assert await drain(pipe) == b'{"error": "x"}{"error": "y"}'
    assert job.state is JobState.SUCCEEDED


async def test_the_last_chunk_of_a_sized_body_travels_with_its_end(broker: Broker) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    up = broker.begin_upload(runtime(broker), job.job_id, 6)
    await up.feed(b"abc")
    assert pipe.receive_channel.receive_nowait() == b"abc"
    await up.feed(b"def")
    with pytest.raises(trio.WouldBlock):
        pipe.receive_channel.receive_nowait()
    await up.finish()
    assert pipe.declared_length == 6
    assert await drain(pipe) == b"def"


async def test_a_large_result_streams_but_is_not_kept(nursery: trio.Nursery) -> None:
    broker = make_broker(max_retained_result_bytes=10)
    job = submit(broker)
    await broker.take(runtime(broker))
    await upload(broker, job, b"0123456789", b"abc")
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    assert job.result.chunks is None
    assert job.result.size == 13


async def test_a_second_result_conflicts_and_a_broken_upload_does_not_count(broker: Broker) -> None:
    job = submit(broker)
    await broker.take(runtime(broker))
    first = broker.begin_upload(runtime(broker), job.job_id, None)
    with pytest.raises(Conflict):
        broker.begin_upload(runtime(broker), job.job_id, None)
    await first.feed(b"partial")
    first.abort()
    assert job.state is JobState.RUNNING
    await upload(broker, job, b"whole")
    assert job.result is not None
    assert job.result.body() == b"whole"
    with pytest.raises(Conflict, match="first complete result wins"):
        broker.begin_upload(runtime(broker), job.job_id, None)


async def test_a_broken_upload_cuts_a_caller_already_streaming(broker: Broker) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    up = broker.begin_upload(runtime(broker), job.job_id, None)
    await up.feed(b"[1]")
    up.abort()
    assert await drain(pipe) == b"[1]"
    assert job.state is JobState.RUNNING


async def test_results_of_another_runtime_are_not_found(broker: Broker) -> None:
    job = submit(broker)
    await broker.take(runtime(broker))
    with pytest.raises(NotFound):
        broker.begin_upload(runtime(broker, "other"), job.job_id, None)


# Callers leaving ----------------------------------------------------------------------------------


async def test_a_caller_leaving_before_dispatch_cancels_the_job(broker: Broker) -> None:
    job = submit(broker, sync=True)
    broker.caller_gone(job, FailureKind.CALLER_LEFT)
    assert job.state is JobState.CANCELLED
    with trio.move_on_after(0) as scope:
        await broker.take(runtime(broker))
    assert scope.cancelled_caught, "a cancelled job is never handed out"


async def test_a_caller_leaving_after_dispatch_lets_the_job_finish(broker: Broker) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    up = broker.begin_upload(runtime(broker), job.job_id, None)
    await up.feed(b"[1]")
    assert pipe.receive_channel.receive_nowait() == b"[1]"
    broker.caller_gone(job, FailureKind.CALLER_LEFT)
    await up.feed(b"[2]")
    await up.finish()
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    assert job.result.body() == b"[1][2]"


# Timeouts ----------------------------------------------------------------------------------------


async def test_job_timeout_fails_a_dispatched_job_and_ends_its_caller(
    broker: Broker, autojump_clock: Any
) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await broker.take(runtime(broker))
    start = trio.current_time()
    assert await drain(pipe) == b""
    assert trio.current_time() - start == pytest.approx(600)
    assert job.state is JobState.FAILED
    assert job.failure is not None
    assert job.failure.kind is FailureKind.JOB_TIMEOUT
    assert "600 s" in job.failure.message
    # A result arriving afterwards is drained and dropped.
    await upload(broker, job, b"late")
    assert job.result is None


async def test_execute_timeout_is_a_cancel_scope_at_the_call_site(
    broker: Broker, autojump_clock: Any
) -> None:
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    with trio.move_on_after(300) as waiting:
        await pipe.receive_channel.receive()
    assert waiting.cancelled_caught
    broker.caller_gone(job, FailureKind.EXECUTE_TIMEOUT)
    assert job.state is JobState.CANCELLED
    assert job.failure is not None
    assert job.failure.kind is FailureKind.EXECUTE_TIMEOUT
    assert "300 s" in job.failure.message


async def test_job_timeout_restarts_with_each_dispatch(broker: Broker, autojump_clock: Any) -> None:
    job = submit(broker)
    await broker.take(runtime(broker))
    await trio.sleep(500)  # allowed: virtual time on the autojump clock
    broker.give_back(job)
    await broker.take(runtime(broker))
    await trio.sleep(500)  # allowed: virtual time on the autojump clock
    assert job.state is JobState.RUNNING
    await trio.sleep(101)  # allowed: virtual time on the autojump clock
    assert job.state is JobState.FAILED


async def test_queue_timeout_cancels_a_job_nobody_took(broker: Broker, autojump_clock: Any) -> None:
    job = submit(broker)
    await trio.sleep(899)  # allowed: virtual time on the autojump clock
    assert job.state is JobState.QUEUED
    await trio.sleep(2)  # allowed: virtual time on the autojump clock
    assert job.state is JobState.CANCELLED
    assert job.failure is not None
    assert job.failure.kind is FailureKind.QUEUE_TIMEOUT


async def test_retention_forgets_finished_jobs(broker: Broker, autojump_clock: Any) -> None:
    job = submit(broker)
    await broker.take(runtime(broker))
    await upload(broker, job, b"1")
    await trio.sleep(999)  # allowed: virtual time on the autojump clock
    assert broker.jobs.get(job.job_id) is job
    await trio.sleep(2)  # allowed: virtual time on the autojump clock
    with pytest.raises(NotFound) as error:
        broker.jobs.get(job.job_id)
    assert error.value.code == "job_expired"


async def test_the_sweep_sleeps_when_there_is_nothing_to_do(
    broker: Broker, autojump_clock: Any
) -> None:
    await trio.sleep(10_000)  # allowed: virtual time on the autojump clock
    job = submit(broker)
    await trio.sleep(901)  # allowed: virtual time on the autojump clock
    assert job.state is JobState.CANCELLED


# Restarts and resets -----------------------------------------------------------------------------


async def test_restart_fails_only_the_restarting_replicas_jobs(broker: Broker) -> None:
    mine, theirs = submit(broker, sync=True), submit(broker)
    pipe = broker.pipe(mine)
    await broker.take(runtime(broker), "a")
    await broker.take(runtime(broker), "b")
    assert broker.restart(runtime(broker), "a") == [mine.job_id]
    assert mine.state is JobState.FAILED
    assert theirs.state is JobState.RUNNING
    assert mine.failure is not None
    assert mine.failure.kind is FailureKind.MODULE_RESTARTED
    assert await drain(pipe) == b"", "the waiting caller is told at once"


async def test_restart_requeues_when_configured(nursery: trio.Nursery) -> None:
    broker = make_broker(on_restart="requeue")
    first, second = submit(broker), submit(broker)
    await broker.take(runtime(broker))
    assert broker.restart(runtime(broker)) == [first.job_id]
    assert first.state is JobState.QUEUED
    assert await broker.take(runtime(broker)) is first
    assert second.state is JobState.QUEUED


async def test_a_runtime_reset_ends_its_running_jobs_and_keeps_queued_ones(broker: Broker) -> None:
    running, waiting = submit(broker), submit(broker)
    await broker.take(runtime(broker), "x")
    assert broker.runtime_reset(runtime(broker)) == [running.job_id]
    assert running.failure is not None
    assert running.failure.kind is FailureKind.RUNTIME_RESET
    assert waiting.state is JobState.QUEUED


# Closing -----------------------------------------------------------------------------------------


async def test_close_answers_every_poll_and_caller(nursery: trio.Nursery) -> None:
    broker = make_broker()
    await nursery.start(broker.run)
    results: list[Job | None] = []

    async def poll() -> None:
        results.append(await broker.take(runtime(broker, "other")))

    for _ in range(3):
        nursery.start_soon(poll)
    job = submit(broker, sync=True)
    pipe = broker.pipe(job)
    await trio.testing.wait_all_tasks_blocked()
    broker.close(FailureKind.EMULATOR_RESET)
    assert await drain(pipe) == b""
    await trio.testing.wait_all_tasks_blocked()
    assert results == [None, None, None]
    assert await broker.take(runtime(broker)) is None
    with pytest.raises(BrokerClosed):
        submit(broker)


async def test_deadlines_of_ended_jobs_do_not_pile_up(broker: Broker) -> None:
    # Without compaction every job would keep a queue and a job deadline entry for
    # queue_timeout / job_timeout (900 s and 600 s here), long after it was forgotten.
    from emulator.foundry.broker import COMPACT_EVERY

    running = submit(broker, "runs without a result")
    assert await broker.take(runtime(broker)) is running
    for index in range(COMPACT_EVERY + 10):
        job = submit(broker, index)
        assert await broker.take(runtime(broker)) is job
        await upload(broker, job, b"ok")
        assert job.state is JobState.SUCCEEDED
    # Left: the entries of the jobs that ended after the last compaction, and the running
    # job's timeout, which must survive every compaction.
    assert len(broker._queue_deadlines) <= 10
    assert len(broker._job_deadlines) <= 11
    assert any(entry[1] == running.job_id for entry in broker._job_deadlines)
