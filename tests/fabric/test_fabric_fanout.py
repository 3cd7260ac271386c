"""The event hub's three ways to listen (topic, shared feed, generic) and its coalesced
wake-ups, on trio's autojump clock so the batching window is exact."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from emulator.fabric.core.events import DomainEvent
from emulator.fabric.fanout import PUSH_FRAMES, EventFilter, EventHub

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
        assert hub.statistics() == {
            "subscribers": 1,
            "written_by_hub": 0,
            "dropped_for_overflow": 1,
        }
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


class FakePusher:
    """A connection that takes writes at once: `room` bytes each before the rest is owed;
    `refusing`: it takes nothing (a write of the subscriber's own is in progress)."""

    def __init__(self, room: int = 1 << 30) -> None:
        self.room = room
        self.refusing = False
        self.owed = False
        self.written: list[bytes] = []
        self._changed = trio.Event()

    def send_nowait(self, body: bytes) -> bool:
        if self.refusing or self.owed:
            return False
        self.written.append(body)
        self.owed = len(body) > self.room
        self._changed.set()
        self._changed = trio.Event()
        return True

    async def wrote(self, count: int) -> None:
        """Wait until `count` writes have been taken."""
        while len(self.written) < count:
            await self._changed.wait()


def _all() -> EventFilter:
    return lambda e: True


class Pushed:
    """A feed subscriber handed over to a running hub, and its task, which records when it
    is woken (it should not be while the hub writes for it)."""

    def __init__(self, hub: EventHub, pusher: FakePusher) -> None:
        self.sub = hub.subscribe_feed("all", _all(), CountingEncoder(), 0)
        assert self.sub.hand_over(pusher)
        self.woken = trio.Event()

    async def wait(self) -> None:
        await self.sub.wait_for_more()
        self.woken.set()


@asynccontextmanager
async def handed_over(
    buffer: int, *pushers: FakePusher
) -> AsyncIterator[tuple[EventHub, list[Pushed]]]:
    """A running hub and one handed-over subscriber per pusher, each with its task waiting."""
    async with trio.open_nursery() as nursery:
        hub = EventHub(buffer=buffer, flush_interval=0.02)
        await nursery.start(hub.run)
        pushed = [Pushed(hub, pusher) for pusher in pushers]
        for each in pushed:
            nursery.start_soon(each.wait)
        await trio.testing.wait_all_tasks_blocked()
        yield hub, pushed
        for each in pushed:
            hub.leave(each.sub)
        nursery.cancel_scope.cancel()


async def test_without_run_no_subscriber_is_handed_over() -> None:
    hub = EventHub(buffer=8, flush_interval=0.02)
    with hub.subscribe_feed("all", _all(), CountingEncoder(), 0) as sub:
        assert not sub.hand_over(FakePusher())
        assert sub.pusher is None


async def test_the_hub_writes_for_a_handed_over_subscriber_without_waking_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    pusher = FakePusher()
    async with handed_over(64, pusher) as (hub, [pushed]):
        assert hub.statistics()["written_by_hub"] == 1
        first = [_event() for _ in range(3)]
        for event in first:
            hub.publish_nowait(event)
        await trio.testing.wait_all_tasks_blocked()
        written_at = trio.current_time()
        later = [_event() for _ in range(2)]
        for event in later:  # inside the window: written together at its end
            hub.publish_nowait(event)
        await trio.testing.wait_all_tasks_blocked()
        assert len(pusher.written) == 1
        await pusher.wrote(2)  # at the end of the window (autojump clock)
        assert pusher.written == [
            b"".join(f"<{e.id}>".encode() for e in first),
            b"".join(f"<{e.id}>".encode() for e in later),
        ]
        assert pushed.sub.last_id == later[-1].id
        assert pushed.sub.pushed_at == pytest.approx(written_at + 0.02)
        assert not pushed.woken.is_set()
        assert pushed.sub.receive_frames_nowait(10) == (b"", None)
        # Leaving hands it back: its task wakes and the hub forgets it.
        hub.leave(pushed.sub)
        await pushed.woken.wait()
        assert hub.statistics()["written_by_hub"] == 0


async def test_a_refused_write_hands_back_with_the_frames_still_unsent(
    autojump_clock: trio.abc.Clock,
) -> None:
    pusher = FakePusher()
    pusher.refusing = True
    async with handed_over(64, pusher) as (hub, [pushed]):
        event = _event()
        hub.publish_nowait(event)
        await pushed.woken.wait()
        assert pushed.sub.pusher is None
        assert pushed.sub.receive_frames_nowait(10) == (f"<{event.id}>".encode(), event.id)


async def test_an_owing_connection_or_a_subscriber_still_behind_goes_back_to_its_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    owing, behind = FakePusher(room=4), FakePusher()
    async with handed_over(4 * PUSH_FRAMES, owing, behind) as (hub, both):
        events = [_event() for _ in range(PUSH_FRAMES + 5)]
        for event in events:
            hub.publish_nowait(event)
        for pushed in both:
            await pushed.woken.wait()
        assert hub.statistics()["written_by_hub"] == 0
        # Each was written one bounded block; the rest is its task's to write.
        for pusher, pushed in zip((owing, behind), both, strict=True):
            assert [block.count(b"<") for block in pusher.written] == [PUSH_FRAMES]
            assert pushed.sub.last_id == events[PUSH_FRAMES - 1].id
            rest, last = pushed.sub.receive_frames_nowait(PUSH_FRAMES)
            assert (rest.count(b"<"), last) == (5, events[-1].id)


async def test_a_handed_over_subscriber_too_far_behind_is_dropped_and_woken(
    autojump_clock: trio.abc.Clock,
) -> None:
    pusher = FakePusher()
    async with handed_over(4, pusher) as (hub, [pushed]):
        for _ in range(5):  # in one step: the hub cannot write in between
            hub.publish_nowait(_event())
        await pushed.woken.wait()
        assert pushed.sub.overflowed
        assert pusher.written == []
        assert hub.statistics() == {
            "subscribers": 0,
            "written_by_hub": 0,
            "dropped_for_overflow": 1,
        }
