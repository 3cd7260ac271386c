"""The ConnectSoft engine on trio: the timer-driven driver and the fan-out to waiting readers.

Owns `RuntimeEngine` (runs every core call at the clock's `now`, moves the state machines on when
their durations run out, wakes event-stream readers and health-stream subscribers after every
change), `HealthHub` and `HealthSubscription` (one bounded buffer per open health stream: when a
slow reader lets it fill, the oldest update is dropped and counted, so an open stream never holds
more than `capacity` updates), `HealthSnapshot` and `TrioTimeClock` (the injected clock that
follows trio's clock, so tests run on `autojump_clock` and never sleep).

How the driver waits: it asks the core for the next due time and sleeps until then or until a
call changes the state (a new deployment may be due sooner), whichever comes first. Every change,
whether from a call or a timer, goes through `_dispatch`, which reads the new events from the log
and tells the subscribers.

Imports trio, the ConnectSoft core and the shared event feed (emulator.web.sse); must not
import quart, hypercorn or yaml.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import attrs
import trio

from ..platform.clock import Clock
from ..web.sse import EventFeed, ServerSentEvent
from .core.errors import Exhausted
from .core.events import Event, Resume
from .core.records import Check, RuntimeService
from .core.state import RuntimeState

R = TypeVar("R")
# Open health streams across all services; one more is refused with RESOURCE_EXHAUSTED / 429.
MAX_SUBSCRIPTIONS = 20_000
HEALTH_EVENT = "ServiceHealthChanged"
# Events buffered per event-stream reader before it counts as fallen behind (it then reconnects
# with Last-Event-ID and resumes from the log).
SSE_BUFFER = 256


@attrs.frozen
class TrioTimeClock:
    """Wall-clock seconds that advance with trio's clock (tests use it with autojump_clock)."""

    # Wall-clock seconds minus trio seconds.
    offset: float

    @classmethod
    def starting_at(cls, epoch: float) -> TrioTimeClock:
        """A clock that reads `epoch` now (call inside trio.run)."""
        return cls(epoch - trio.current_time())

    def now(self) -> float:
        return self.offset + trio.current_time()


@attrs.frozen
class HealthSnapshot:
    service_id: str
    environment_id: str
    status: str
    checks: tuple[Check, ...]
    evaluated_at: float

    @classmethod
    def of(cls, service: RuntimeService) -> HealthSnapshot:
        return cls(
            service.service_id,
            service.environment_id,
            service.health_status,
            service.effective_checks(),
            service.evaluated_at,
        )


ServiceKey = tuple[str, str]  # (environmentId, serviceId)


class HealthSubscription:
    """The updates of one service waiting for one reader."""

    def __init__(self, key: ServiceKey, capacity: int) -> None:
        self.key = key
        self._buffer: deque[HealthSnapshot] = deque(maxlen=capacity)
        self._lot = trio.lowlevel.ParkingLot()
        self.dropped = 0
        self.closed = False

    def push(self, snapshot: HealthSnapshot) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(snapshot)
        self._lot.unpark_all()

    def close(self) -> None:
        self.closed = True
        self._lot.unpark_all()

    async def receive(self) -> HealthSnapshot:
        """The oldest buffered update; waits for one. EndOfChannel once closed and drained."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._buffer:
            if self.closed:
                raise trio.EndOfChannel
            await self._lot.park()
        snapshot = self._buffer.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return snapshot

    def __len__(self) -> int:
        return len(self._buffer)


class HealthHub:
    def __init__(self, capacity: int, limit: int = MAX_SUBSCRIPTIONS) -> None:
        self.capacity = capacity
        self.limit = limit
        self._subscribers: dict[ServiceKey, set[HealthSubscription]] = {}
        self._count = 0
        self._count_changed = trio.lowlevel.ParkingLot()
        self.closed = False

    @contextmanager
    def subscribe(self, key: ServiceKey) -> Iterator[HealthSubscription]:
        if self._count >= self.limit:
            raise Exhausted("TooManyStreams", "Too many open health streams; retry later.")
        subscription = HealthSubscription(key, self.capacity)
        if self.closed:
            # A stream that races a reset or shutdown ends at once instead of waiting forever.
            subscription.close()
        self._subscribers.setdefault(key, set()).add(subscription)
        self._count += 1
        self._count_changed.unpark_all()
        try:
            yield subscription
        finally:
            self._count -= 1
            self._count_changed.unpark_all()
            holders = self._subscribers.get(key)
            if holders is not None:
                holders.discard(subscription)
                if not holders:
                    del self._subscribers[key]

    async def wait_open_streams(self, count: int) -> None:
        """Return once exactly `count` streams are open (tests wait on this, never sleep)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self._count != count:
            await self._count_changed.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def publish(self, key: ServiceKey, snapshot: HealthSnapshot) -> None:
        for subscription in self._subscribers.get(key, ()):
            subscription.push(snapshot)

    def keys(self) -> list[ServiceKey]:
        return list(self._subscribers)

    def close_all(self) -> None:
        self.closed = True
        for holders in self._subscribers.values():
            for subscription in holders:
                subscription.close()

    def statistics(self) -> dict[str, int]:
        return {"open_streams": self._count, "services_watched": len(self._subscribers)}


class RuntimeEngine:
    def __init__(self, state: RuntimeState, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        self.health = HealthHub(state.seed.stream_buffer)
        self._dispatched = state.events.last_sequence
        self._wake = trio.Event()
        self._events_lot = trio.lowlevel.ParkingLot()
        # Live events for /_emulate/connectsoft/events (emulator.web.sse).
        self.feed: EventFeed[ServerSentEvent] = EventFeed(buffer=SSE_BUFFER)
        self.closed = False

    def now(self) -> float:
        return self.clock.now()

    def call(self, operation: Callable[[float], R]) -> R:
        """Run one core call at `now` (after any steps already due), then tell everyone.

        The change is dispatched even when the call raises: a governance refusal may have
        recorded an approval request and its event.
        """
        now = self.clock.now()
        self.state.advance(now)
        try:
            return operation(now)
        finally:
            self._dispatch()
            self._wake.set()

    def read(self, operation: Callable[[], R]) -> R:
        """A read that first takes any step already due, so it never sees a stale phase."""
        if self.state.advance(self.clock.now()):
            self._dispatch()
        return operation()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The driver: take due steps, then sleep until the next one or the next change."""
        task_status.started()
        while True:
            if self.state.advance(self.clock.now()):
                self._dispatch()
            due = self.state.next_due()
            self._wake = trio.Event()
            delay = math.inf if due is None else max(due - self.clock.now(), 0.0)
            with trio.move_on_after(delay):
                await self._wake.wait()

    def close(self) -> None:
        """Shutdown or reset: end every open stream and wake every waiting reader."""
        self.closed = True
        self.health.close_all()
        self.feed.close()
        self._events_lot.unpark_all()

    async def wait_events(self, after: int) -> Resume:
        """The events after a sequence number; waits until there is at least one (or closing)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.state.events.last_sequence <= after and not self.closed:
            await self._events_lot.park()
        resume = self.state.events.after(after)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return resume

    def _dispatch(self) -> None:
        resume = self.state.events.after(self._dispatched)
        self._dispatched = self.state.events.last_sequence
        if not resume.events:
            return
        if self.feed.statistics().subscribers:
            # Encoded only when someone is listening (most of the time nobody is).
            for event in resume.events:
                self.feed.publish_nowait(sse_event(event))
        changed: set[ServiceKey] = set()
        if resume.gap:
            # More changes than the log keeps happened at once: refresh every watched service.
            changed.update(self.health.keys())
        changed.update(
            (str(e.payload["environmentId"]), str(e.payload["serviceId"]))
            for e in resume.events
            if e.event_type == HEALTH_EVENT
        )
        for key in changed:
            env = self.state.environments.get(key[0])
            service = None if env is None else env.services.get(key[1])
            if service is not None:
                self.health.publish(key, HealthSnapshot.of(service))
        self._events_lot.unpark_all()


def sse_event(event: Event) -> ServerSentEvent:
    """An event of the log as a server-sent event; its id is the log's sequence number."""
    data = json.dumps(event.envelope(), separators=(",", ":"), ensure_ascii=False)
    return ServerSentEvent(data=data, event=event.event_type, id=str(event.sequence))
