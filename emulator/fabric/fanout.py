"""Event fan-out: the hub every published event goes through, and its subscriptions.

Owns `EventHub`, `Subscription` and `Feed`. Three ways to listen, each paying only for what it
gets:

- **topic** (a job's or a run's stream): the hub hands each event only to the subscriptions of
  its job id and run id (a dict look-up per event) and wakes just those;
- **feed** (the all-events streams): subscribers with the same audience (same organizations,
  same `include_internal`) share one `Feed` of frames encoded once per event; a subscriber is
  a position in it and takes everything it has not sent yet as one block of bytes, so its cost
  per wake-up does not grow with the number of events (the more behind, the bigger the write);
- **generic** (a filter function over a shared ring of the last `buffer` events; tests and the
  WebSocket mirror).

Every kind is bounded by `buffer` events: a subscriber further behind is dropped (`overflowed`),
so a slow reader never slows the producer or anyone else; its stream ends and it resumes from
the event log with `Last-Event-ID`.

Wake-ups of feed and generic subscribers are coalesced while `run()` is running: the first
event after a quiet spell wakes them at once, later ones at most once per `flush_interval`, so
with a thousand subscribers and thousands of events a second each subscriber writes tens of
times a second instead of once per event (each write is a task switch and a system call).
Without `run()` (tests) every publish wakes them at once.

A feed subscriber whose connection can be written without waiting (a `Pusher`: the emulator's
own HTTP/1.1 server over plain TCP) and that has caught up is handed over to the hub: after
each batching window the hub writes every such subscriber's new frames itself, one system call
each, with no task switch (with a thousand subscribers the task switches cost more than the
writes). A subscriber whose socket does not take a write whole goes back to its own task,
which writes with backpressure until it has caught up.
Imports trio and the Fabric core; nothing from quart, yaml or the API layer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Protocol

import attrs
import trio

from .core.events import DomainEvent

EventFilter = Callable[[DomainEvent], bool]
Encoder = Callable[[DomainEvent], bytes]
# Frames the hub writes to one subscriber at once (about 60 KiB).
PUSH_FRAMES = 128


class Pusher(Protocol):
    """Writes a subscriber's bytes without waiting (a server's `DirectBody`)."""

    @property
    def owed(self) -> bool:
        """Bytes taken are still waiting for the socket."""

    def send_nowait(self, body: bytes) -> bool:
        """Take `body` (written at once, or the rest owed); False: nothing was taken."""


@attrs.define(eq=False)
class Feed:
    """The encoded frames of the events one audience accepts, shared by its subscribers.

    Positions count accepted events; `frames[i]` is at position `base + i`. Between `buffer`
    and twice that many frames are kept (trimmed in halves); a subscriber more than `buffer`
    behind is dropped anyway."""

    accepts: EventFilter
    encode: Encoder
    buffer: int
    frames: list[bytes] = attrs.field(factory=list)
    ids: list[str] = attrs.field(factory=list)
    base: int = 0
    members: int = 0
    # The last block handed out, as (start, stop, bytes): the subscribers that are up to date
    # in a round all ask for the same range, and share one copy of it.
    _block: tuple[int, int, bytes] = (0, 0, b"")

    @property
    def position(self) -> int:
        return self.base + len(self.frames)

    def append(self, event: DomainEvent, frame: bytes) -> None:
        self.frames.append(frame)
        self.ids.append(event.id)
        # Trim in halves so the cost per event stays constant.
        if len(self.frames) >= 2 * self.buffer:
            drop = len(self.frames) - self.buffer
            del self.frames[:drop]
            del self.ids[:drop]
            self.base += drop

    def block(self, start: int, stop: int) -> bytes:
        """The frames of positions [start, stop) as one bytes object."""
        cached = self._block
        if cached[0] == start and cached[1] == stop:
            return cached[2]
        first, last = start - self.base, stop - self.base
        data = self.frames[first] if last - first == 1 else b"".join(self.frames[first:last])
        self._block = (start, stop, data)
        return data


@attrs.define(eq=False)
class Subscription:
    """One subscriber: a cursor (into the hub's ring, its feed, or its own inbox) and the
    filter it reads through.

    `overflowed` is set when it fell more than the buffer behind; it then gets no further
    events and its stream ends, to be resumed from the event log with `Last-Event-ID`.
    """

    hub: EventHub
    accepts: EventFilter
    # The last sequence in the event log when it subscribed: replay covers up to here.
    start_sequence: int
    # The position it has read up to (in the ring, or in its feed).
    cursor: int
    topic: str | None = None
    feed: Feed | None = None
    # Topic subscriptions: the events routed to it, not yet read.
    inbox: deque[DomainEvent] = attrs.field(factory=deque)
    wakeup: trio.Event = attrs.field(factory=trio.Event)
    overflowed: bool = False
    closed: bool = False
    # Feed subscriptions: the id of the last event written to the subscriber, and, while the
    # hub writes for it (`hand_over`), how, and when it last did.
    last_id: str | None = None
    pusher: Pusher | None = None
    pushed_at: float = 0.0

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.hub.leave(self)

    def _overflow(self) -> None:
        self.overflowed = True
        self.hub.dropped += 1
        self.hub.leave(self)

    def receive_ready_nowait(self, limit: int) -> list[DomainEvent]:
        """Up to `limit` accepted events already published, without waiting (maybe none);
        not for feed subscriptions (see `receive_frames_nowait`)."""
        if self.closed:
            return []
        if self.topic is not None:
            return self._from_inbox(limit)
        hub = self.hub
        behind = hub.position - self.cursor
        if behind <= 0:
            return []
        ring = hub.ring
        if behind > len(ring):
            self._overflow()
            return []
        found: list[DomainEvent] = []
        for index in range(len(ring) - behind, len(ring)):
            event = ring[index]  # near the end of the deque: cheap
            self.cursor += 1
            if self.accepts(event):
                found.append(event)
                if len(found) >= limit:
                    break
        return found

    def _from_inbox(self, limit: int) -> list[DomainEvent]:
        inbox = self.inbox
        found: list[DomainEvent] = []
        while inbox and len(found) < limit:
            event = inbox.popleft()
            if self.accepts(event):
                found.append(event)
        return found

    def receive_frames_nowait(self, limit: int) -> tuple[bytes, str | None]:
        """A feed subscription's unsent frames, up to `limit` of them, as one block (empty if
        none), and the id of the last event in it."""
        block, stop = self._frames_ahead(limit)
        if not block:
            return b"", None
        self._sent_to(stop)
        return block, self.last_id

    def _frames_ahead(self, limit: int) -> tuple[bytes, int]:
        """The unsent frames (up to `limit`) as one block and the position after them, without
        taking them; a subscriber too far behind is dropped here."""
        feed = self.feed
        assert feed is not None, "only feed subscriptions have frames"
        start = self.cursor
        if self.closed or start >= feed.position:
            return b"", start
        if feed.position - start > feed.buffer:
            self._overflow()
            return b"", start
        stop = min(feed.position, start + limit)
        return feed.block(start, stop), stop

    def _sent_to(self, stop: int) -> None:
        feed = self.feed
        assert feed is not None
        self.cursor = stop
        self.last_id = feed.ids[stop - 1 - feed.base]

    def hand_over(self, pusher: Pusher) -> bool:
        """Let the hub write this feed subscription's frames through `pusher` from now on
        (the subscriber's task then only waits: to be handed back, for the end, or to send a
        keep-alive); False when the hub is not pushing (its `run()` is not running)."""
        if not self.hub.pushing or self.closed:
            return False
        self.pusher = pusher
        self.hub._pushed.add(self)
        return True

    def take_back(self) -> None:
        """The subscriber's task writes again (the hub stops pushing to it)."""
        if self.pusher is not None:
            self.pusher = None
            self.hub._pushed.discard(self)

    async def receive_batch(self, limit: int = 256) -> list[DomainEvent]:
        """The next accepted events (at least one); trio.EndOfChannel once the subscription
        has ended (overflow, shutdown, or left)."""
        while True:
            found = self.receive_ready_nowait(limit)
            if found:
                # The cursor has moved: a cancellation here must not lose these events.
                await trio.lowlevel.cancel_shielded_checkpoint()
                return found
            if self.closed:
                await trio.lowlevel.checkpoint()
                raise trio.EndOfChannel
            await self.wait_for_more()

    async def wait_for_more(self) -> None:
        """Return when there may be something new to read, or the subscription has ended; a
        subscription the hub pushes to returns once it is handed back (or has ended)."""
        # Take the event to wait on before looking, so a publish in between is not missed.
        own = self.topic is not None or self.pusher is not None
        wakeup = self.wakeup if own else self.hub.wakeup
        if self.pusher is not None:
            if self.closed:
                await trio.lowlevel.checkpoint()
                return
        elif self.topic is not None:
            if self.inbox or self.closed:
                await trio.lowlevel.checkpoint()
                return
        elif self._has_unread() or self.closed:
            await trio.lowlevel.checkpoint()
            return
        await wakeup.wait()

    def _has_unread(self) -> bool:
        position = self.hub.position if self.feed is None else self.feed.position
        return self.cursor < position

    async def receive(self) -> DomainEvent:
        """The next accepted event (tests and simple readers)."""
        batch = await self.receive_batch(1)
        return batch[0]


@attrs.define
class EventHub:
    """Fan-out (see the module docstring). Producers never wait and never block on a
    subscriber."""

    buffer: int = 4096
    # The least time between two wake-ups of the feed and generic subscribers (with `run()`).
    flush_interval: float = 0.0
    ring: deque[DomainEvent] = attrs.field(factory=deque)
    # How many events were ever published (the position after the newest).
    position: int = 0
    dropped: int = 0
    wakeup: trio.Event = attrs.field(factory=trio.Event)
    _subscribers: set[Subscription] = attrs.field(factory=set)
    _topics: dict[str, set[Subscription]] = attrs.field(factory=dict)
    _feeds: dict[Hashable, Feed] = attrs.field(factory=dict)
    # Subscribers woken through `wakeup` (feed and generic ones).
    _broad: int = 0
    _pending: trio.Event = attrs.field(factory=trio.Event)
    _coalescing: bool = False
    # Feed subscribers the hub writes to itself, after each batching window (`hand_over`).
    _pushed: set[Subscription] = attrs.field(factory=set)
    _changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def pushing(self) -> bool:
        """Whether feed subscribers may be handed over (`run()` is batching)."""
        return self._coalescing

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_subscribers(self, count: int) -> None:
        """Wait until exactly `count` subscribers are attached (tests, orderly starts)."""
        while len(self._subscribers) != count:
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    def publish_nowait(self, event: DomainEvent) -> None:
        """Publish without ever waiting."""
        self.ring.append(event)
        if len(self.ring) > self.buffer:
            self.ring.popleft()
        self.position += 1
        if self._topics:
            self._route(event, event.job_id)
            if event.run_id != event.job_id:
                self._route(event, event.run_id)
        if self._feeds:
            frame: bytes | None = None
            for feed in self._feeds.values():
                if feed.accepts(event):
                    if frame is None:
                        frame = feed.encode(event)
                    feed.append(event, frame)
        if self._broad:
            if self._coalescing:
                self._pending.set()
            else:
                self._wake_broad()

    def _route(self, event: DomainEvent, topic: str | None) -> None:
        if topic is None:
            return
        for sub in tuple(self._topics.get(topic, ())):
            if len(sub.inbox) >= self.buffer:
                sub.inbox.clear()
                sub._overflow()
                continue
            sub.inbox.append(event)
            sub.wakeup.set()
            sub.wakeup = trio.Event()

    def _wake_broad(self) -> None:
        self.wakeup.set()
        self.wakeup = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Coalesce wake-ups of feed and generic subscribers (see the module docstring)."""
        if self.flush_interval <= 0:
            task_status.started()
            await trio.sleep_forever()
        self._coalescing = True
        try:
            task_status.started()
            while True:
                await self._pending.wait()
                self._pending = trio.Event()
                began = trio.current_time()
                self._wake_broad()
                self._push()
                # The batching window, counted from the start of this round (so a long push
                # does not lengthen it): events published meanwhile go out together at the
                # next wake-up (a rate limit on wake-ups, not a wait for something).
                await trio.sleep_until(began + self.flush_interval)
        finally:
            self._coalescing = False

    def _push(self) -> None:
        """Write to every handed-over subscriber what it has not got yet, one system call each
        and no task switch. One that the connection cannot take at once (a write in progress,
        bytes still owed) or that is further behind than one write is handed back to its
        task, which writes with backpressure and hands it over again once caught up."""
        now = trio.current_time()
        for sub in tuple(self._pushed):
            pusher, feed = sub.pusher, sub.feed
            if pusher is None or feed is None:
                continue
            block, stop = sub._frames_ahead(PUSH_FRAMES)
            if not block:
                continue  # nothing new, or dropped for overflow (which woke its task)
            if not pusher.send_nowait(block):
                self._hand_back(sub)
                continue
            sub._sent_to(stop)
            sub.pushed_at = now
            if pusher.owed or stop < feed.position:
                self._hand_back(sub)

    def _hand_back(self, sub: Subscription) -> None:
        sub.take_back()
        sub.wakeup.set()
        sub.wakeup = trio.Event()

    def leave(self, sub: Subscription) -> None:
        sub.closed = True
        if sub not in self._subscribers:
            return
        self._subscribers.discard(sub)
        if sub.pusher is not None:
            self._hand_back(sub)
        if sub.topic is not None:
            members = self._topics.get(sub.topic)
            if members is not None:
                members.discard(sub)
                if not members:
                    del self._topics[sub.topic]
            sub.wakeup.set()
        else:
            self._broad -= 1
        feed = sub.feed
        if feed is not None:
            feed.members -= 1
            if not feed.members:
                self._feeds = {k: f for k, f in self._feeds.items() if f is not feed}
        self._notify()

    def subscribe(
        self, accepts: EventFilter, last_sequence: int, *, topic: str | None = None
    ) -> Subscription:
        """Every event `accepts` takes; with `topic`, only events whose job id or run id is
        `topic` are even looked at. Attached at once; use it in a `with` block, which leaves
        the hub at its end."""
        sub = Subscription(self, accepts, last_sequence, self.position, topic=topic)
        self._attach(sub)
        return sub

    def subscribe_feed(
        self, audience: Hashable, accepts: EventFilter, encode: Encoder, last_sequence: int
    ) -> Subscription:
        """Every event `accepts` takes, as frames from `encode` shared with every subscriber
        of the same `audience` (equal audiences must mean equal filters). Attached at once;
        use it in a `with` block."""
        feed = self._feeds.get(audience)
        if feed is None:
            feed = self._feeds[audience] = Feed(accepts, encode, self.buffer)
        feed.members += 1
        sub = Subscription(self, accepts, last_sequence, feed.position, feed=feed)
        self._attach(sub)
        return sub

    def _attach(self, sub: Subscription) -> None:
        self._subscribers.add(sub)
        if sub.topic is not None:
            self._topics.setdefault(sub.topic, set()).add(sub)
        else:
            self._broad += 1
        self._notify()

    def close_all(self) -> None:
        """Shutdown: every subscription ends (waiting readers wake and see it)."""
        for sub in list(self._subscribers):
            self.leave(sub)
        self._wake_broad()

    def statistics(self) -> dict[str, int]:
        """Subscribers attached, how many of them the hub writes to itself now, and how many
        were ever dropped for falling too far behind."""
        return {
            "subscribers": len(self._subscribers),
            "written_by_hub": len(self._pushed),
            "dropped_for_overflow": self.dropped,
        }
