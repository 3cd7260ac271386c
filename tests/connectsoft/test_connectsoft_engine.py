"""The trio engine: timers on autojump_clock, health fan-out with bounded buffers, event waits."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from connectsoft_builders import T0, caller, make_state
from test_connectsoft_core_state import DEPLOY, PROVISION

from emulator.connectsoft.core.errors import Exhausted
from emulator.connectsoft.core.events import Event
from emulator.connectsoft.core.machines import DeploymentPhase
from emulator.connectsoft.engine import HealthHub, RuntimeEngine, TrioTimeClock

ENV = "env-9f1c2b7d"
KEY = (ENV, "module-reservations-api")


async def wait_for(engine: RuntimeEngine, matches: Callable[[Event], bool]) -> Event:
    seen = 0
    while True:
        resume = await engine.wait_events(seen)
        for event in resume.events:
            if matches(event):
                return event
            seen = event.sequence


@pytest.fixture
async def engine(nursery: trio.Nursery) -> RuntimeEngine:
    engine = RuntimeEngine(make_state(), TrioTimeClock.starting_at(T0))
    await nursery.start(engine.run)
    return engine


async def test_environment_becomes_active_on_the_clock(
    engine: RuntimeEngine, autojump_clock: trio.testing.MockClock
) -> None:
    env = engine.call(lambda now: engine.state.provision(caller(), PROVISION, now))
    event = await wait_for(engine, lambda e: e.event_type == "EnvironmentActivated")
    assert event.correlation_id == env.environment_id
    assert event.occurred_at == T0 + 5
    assert engine.now() == pytest.approx(T0 + 5)


async def test_deployment_runs_to_completion(
    engine: RuntimeEngine, autojump_clock: trio.testing.MockClock
) -> None:
    deployment = engine.call(lambda now: engine.state.create_deployment(caller(), DEPLOY, now))
    await wait_for(engine, lambda e: e.event_type == "DeploymentCompleted")
    assert deployment.phase is DeploymentPhase.COMPLETED
    assert engine.now() == pytest.approx(T0 + 5)


async def test_a_sooner_change_wakes_the_driver(
    engine: RuntimeEngine, autojump_clock: trio.testing.MockClock
) -> None:
    # A long timer is pending; a deployment due sooner must not wait for it.
    engine.call(lambda now: engine.state.provision(caller(), {**PROVISION, "name": "x"}, now))
    engine.call(lambda now: engine.state.create_deployment(caller(), DEPLOY, now))
    await wait_for(engine, lambda e: e.payload.get("phase") == "Provisioning")
    assert engine.now() == pytest.approx(T0)


async def test_health_changes_reach_subscribers(
    engine: RuntimeEngine, autojump_clock: trio.testing.MockClock
) -> None:
    with engine.health.subscribe(KEY) as first, engine.health.subscribe(KEY) as second:
        engine.call(lambda now: engine.state.set_unhealthy(*KEY, "sql", True, now))
        snapshot = await first.receive()
        assert snapshot.status == "Unhealthy"
        assert (await second.receive()).status == "Unhealthy"
        engine.call(lambda now: engine.state.set_unhealthy(*KEY, "sql", False, now))
        assert (await first.receive()).status == "Healthy"
    assert engine.health.statistics() == {"open_streams": 0, "services_watched": 0}


async def test_a_slow_subscriber_loses_the_oldest_updates(
    engine: RuntimeEngine, autojump_clock: trio.testing.MockClock
) -> None:
    capacity = engine.health.capacity
    with engine.health.subscribe(KEY) as slow:
        for n in range(capacity + 3):
            engine.call(lambda now, n=n: engine.state.set_unhealthy(*KEY, "sql", n % 2 == 0, now))
        assert len(slow) == capacity
        assert slow.dropped == 3
        # The newest update is the last one buffered (n = capacity + 2).
        statuses = [(await slow.receive()).status for _ in range(capacity)]
        assert statuses[-1] == ("Unhealthy" if (capacity + 2) % 2 == 0 else "Healthy")


async def test_receive_waits_and_close_ends_it(
    engine: RuntimeEngine, autojump_clock: trio.testing.MockClock
) -> None:
    with engine.health.subscribe(KEY) as subscription:
        async with trio.open_nursery() as nursery:
            got: list[str] = []

            async def reader() -> None:
                got.append((await subscription.receive()).status)
                try:
                    await subscription.receive()
                except trio.EndOfChannel:
                    got.append("closed")

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            engine.call(lambda now: engine.state.set_unhealthy(*KEY, None, True, now))
            await trio.testing.wait_all_tasks_blocked()
            engine.close()
        assert got == ["Unhealthy", "closed"]


def test_subscription_limit() -> None:
    hub = HealthHub(capacity=2, limit=1)
    with hub.subscribe(KEY), pytest.raises(Exhausted), hub.subscribe(KEY):
        pass
    with hub.subscribe(KEY):
        assert hub.statistics()["open_streams"] == 1


async def test_refused_call_still_dispatches_its_approval_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = RuntimeEngine(
        make_state(governance=[{"decision": "require_approval"}]), TrioTimeClock.starting_at(T0)
    )
    with pytest.raises(Exception, match="approval"):
        engine.call(lambda now: engine.state.create_deployment(caller(), DEPLOY, now))
    resume = await engine.wait_events(0)
    assert [e.event_type for e in resume.events] == ["GovernanceApprovalRequested"]


def test_a_subscription_after_close_is_already_ended() -> None:
    hub = HealthHub(capacity=2)
    hub.close_all()
    with hub.subscribe(KEY) as late:
        assert late.closed
