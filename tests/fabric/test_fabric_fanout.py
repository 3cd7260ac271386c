"""The event hub's three ways to listen (topic, shared feed, generic) and its coalesced
wake-ups, on trio's autojump clock so the batching window is exact."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from emulator.fabric.core.events import DomainEvent
from emulator.fabric.fanout import EventHub

_sequence = itertools.count(1)


def _event(job: str | None = None, org: str = "o1", name: str = "job.created") -> DomainEvent:
    n = next(_sequence)
    return DomainEvent(
        id=f"e{n}", sequence=n, name=name, timestamp=0.0, organization_id=org, job_id=job
    )


class CountingEncoder:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: DomainEvent) -> bytes:
        self.calls += 1
        return f"<{event.id}>".encode()


def test_a_feed_encodes_each_event_once_for_all_its_subscribers() -> None:
    hub = EventHub(buffer=16)
    encode = CountingEncoder()
    in_o1 = lambda e: e.organization_id == "o1"  # noqa: E731
    with (
        hub.subscribe_feed("o1", in_o1, encode, 0) as first,
        hub.subscribe_feed("o1", in_o1, encode, 0) as second,
    ):
        events = [_event(), _event(org="o2"), _event()]
        for event in events:
            hub.publish_nowait(event)
        expected = f"<{events[0].id}><{events[2].id}>".encode()
        block, last = first.receive_frames_nowait(10)
        assert (block, last) == (expected, events[2].id)
        # Up to date in the same round: the very same bytes object, not a copy.
        assert second.receive_frames_nowait(10)[0] is block
        assert first.receive_frames_nowait(10) == (b"", None)
    assert encode.calls == 2  # o2's event is not encoded: no feed wants it


def test_a_feed_write_is_bounded_and_the_rest_follows() -> None:
    hub = EventHub(buffer=16)
    with hub.subscribe_feed("all", lambda e: True, CountingEncoder(), 0) as sub:
        events = [_event() for _ in range(5)]
        for event in events:
            hub.publish_nowait(event)
        block, last = sub.receive_frames_nowait(3)
        assert block.count(b"<") == 3
        assert last == events[2].id
        block, last = sub.receive_frames_nowait(3)
        assert block.count(b"<") == 2
        assert last == events[4].id


def test_a_feed_subscriber_too_far_behind_is_dropped_and_others_are_not() -> None:
    hub = EventHub(buffer=4)
    with (
        hub.subscribe_feed("all", lambda e: True, CountingEncoder(), 0) as slow,
        hub.subscribe_feed("all", lambda e: True, CountingEncoder(), 0) as fast,
    ):
        for _ in range(5):
            hub.publish_nowait(_event())
            assert fast.receive_frames_nowait(10)[0]
        assert slow.receive_frames_nowait(10) == (b"", None)
        assert slow.overflowed
        assert slow.closed
        assert not fast.overflowed
        assert hub.statistics() == {"subscribers": 1, "dropped_for_overflow": 1}
        # The feed's memory stays bounded however many events pass.
        for _ in range(100):
            hub.publish_nowait(_event())
            fast.receive_frames_nowait(10)
        assert fast.feed is not None
        assert len(fast.feed.frames) < 2 * 4


def test_a_topic_subscription_only_ever_holds_its_own_events() -> None:
    hub = EventHub(buffer=16)
    with hub.subscribe(lambda e: True, 0, topic="j1") as sub:
        mine = _event(job="j1")
        hub.publish_nowait(_event(job="j2"))
        hub.publish_nowait(mine)
        hub.publish_nowait(_event(job=None))
        assert list(sub.inbox) == [mine]
        assert sub.receive_ready_nowait(10) == [mine]


def test_a_topic_subscription_too_far_behind_is_dropped() -> None:
    hub = EventHub(buffer=2)
    with hub.subscribe(lambda e: True, 0, topic="j1") as sub:
        for _ in range(3):
            hub.publish_nowait(_event(job="j1"))
        assert sub.overflowed
        assert sub.receive_ready_nowait(10) == []


async def test_wake_ups_are_at_once_after_quiet_then_at_most_one_per_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    hub = EventHub(buffer=64, flush_interval=0.02)
    woken: list[tuple[float, int]] = []
    second = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        with hub.subscribe_feed("all", lambda e: True, CountingEncoder(), 0) as sub:

            async def reader() -> None:
                while True:
                    await sub.wait_for_more()
                    block, _ = sub.receive_frames_nowait(64)
                    woken.append((trio.current_time(), block.count(b"<")))
                    if len(woken) == 2:
                        second.set()

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            hub.publish_nowait(_event())  # after a quiet spell: delivered at once
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):  # inside the window: held back, then delivered together
                hub.publish_nowait(_event())
            await trio.testing.wait_all_tasks_blocked()
            assert woken == [(start, 1)]
            await second.wait()
            nursery.cancel_scope.cancel()
    assert woken == [(start, 1), (pytest.approx(start + 0.02), 3)]


async def test_without_run_every_publish_wakes_at_once() -> None:
    hub = EventHub(buffer=8, flush_interval=0.02)
    with hub.subscribe(lambda e: True, 0) as sub:
        hub.publish_nowait(_event())
        assert len(await sub.receive_batch()) == 1
