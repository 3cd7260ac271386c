"""Server-sent event streams of domain events: replay, live delivery, keep-alive, overflow.

Owns `sse_frame`, `comment_frame` and `stream_events`: subscribe first (so nothing falls between
replay and live), replay the retained events after the resume point, then deliver live events
until the stream's closing event, the client leaves, or the hub drops a subscriber that fell
behind. A client that leaves is noticed by a task reading its connection (`_Watch`); a job or
run stream starts that task only once it has waited `WATCH_AFTER` for an event, since most
end sooner (a job through Echo takes milliseconds) and then a failed write tells the same.
A dropped subscriber gets a last comment line `: overflow; reconnect with Last-Event-ID: <id
of the last event sent>` and the stream ends; the client resumes from there with
`Last-Event-ID`. Idle streams get `: keep-alive` comments.
Job and run streams subscribe by topic (their id); the all-events stream subscribes to a
shared feed of encoded frames and writes each wake-up's frames as one block (`fanout.py`).
Imports trio and the generic raw-ASGI request; nothing from quart or yaml.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterable

import trio

from ...asgi import Headers
from ...web.rawasgi import ClientGone
from ..core.events import DomainEvent
from ..fanout import PUSH_FRAMES, EventFilter, Subscription
from . import serialize
from .envelope import Call, encode
from .routes import FRAME_CACHE, FabricApi

# Events already waiting in a subscriber's buffer are written together, up to this many.
MAX_BATCH = 64
# How long a job or run stream waits for an event before a task watches for the client
# leaving (a quarter of the CPU of a fast job's stream went to that task).
WATCH_AFTER = 1.0

SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def sse_frame(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One frame; `data` is one line of compact JSON (the SDK parses each data line alone)."""
    head = b"" if event_id is None else b"id: " + event_id.encode() + b"\n"
    return head + b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def comment_frame(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


def event_frame(api: FabricApi, event: DomainEvent) -> bytes:
    """The event's SSE frame, encoded once for every subscriber (`FabricApi.frames`)."""
    frames = api.frames
    frame = frames.get(event.id)
    if frame is None:
        frame = sse_frame(event.name, encode(serialize.event(event)), event.id)
        frames[event.id] = frame
        if len(frames) > FRAME_CACHE:
            frames.popitem(last=False)
    return frame


def event_text(api: FabricApi, event: DomainEvent) -> str:
    """The event as one JSON text (a WebSocket message): the `data:` line of its SSE frame,
    so every subscriber of either kind shares one encoding of it."""
    frame = event_frame(api, event)
    start = frame.index(b"\ndata: ") + len(b"\ndata: ")
    return frame[start : -len(b"\n\n")].decode("utf-8")


async def start_sse(call: Call, *, flush: bool = True) -> None:
    """The stream's head. With `flush` it goes out now, before any event, so the client knows
    it is subscribed; without, it leaves with the first body bytes, which must follow at once
    (one write fewer for a stream that has a backlog to send)."""
    await call.raw.start(200, [*SSE_HEADERS, (b"x-request-id", call.request_id.encode())])
    if flush:
        await call.raw.send_body(b"", more=True)


async def stream_events(
    api: FabricApi,
    call: Call,
    accepts: EventFilter,
    *,
    replay: bool,
    closes: Callable[[DomainEvent], bool] | None = None,
    already_closed: Callable[[], bool] | None = None,
    candidates: Callable[[], Iterable[DomainEvent]] | None = None,
    topic: str | None = None,
    audience: Hashable | None = None,
) -> None:
    """Answer `call` with an event stream (the caller has authorized it and read the body).

    `topic` (a job or run id every accepted event carries) or `audience` (a key equal for
    equal `accepts`; a stream that never closes) picks the hub's cheaper ways to listen."""
    plane = api.plane
    last_id = call.raw.header(b"last-event-id")
    resume = plane.events.resume_point(last_id.strip() if last_id else None)
    with _subscribe(api, accepts, topic, audience) as sub:
        # Taken in the same step as the subscription: a stream whose subject had already
        # ended has all its events in the backlog (or dropped), none will come live.
        ended = already_closed is not None and already_closed()
        backlog: list[DomainEvent] = []
        if replay or last_id:
            pool = None if candidates is None else candidates()
            backlog = api.engine.replay(accepts, resume, sub.start_sequence, pool)
        head_only = call.raw.method == "HEAD"
        await start_sse(call, flush=head_only or not backlog)
        if head_only:  # the head says it would stream; no body follows
            await call.raw.send_body(b"", more=False)
            return
        gone = False
        async with trio.open_nursery() as nursery:
            watch = _Watch(call, nursery)
            if sub.feed is not None:
                watch.start()  # an all-events stream never ends by itself
            try:
                await _deliver(api, call, sub, backlog, ended, closes, last_id, watch)
            except ClientGone:
                gone = True
            nursery.cancel_scope.cancel()
    if not gone and not call.raw.finished:
        with contextlib.suppress(ClientGone):
            await call.raw.send_body(b"", more=False)


def _subscribe(
    api: FabricApi, accepts: EventFilter, topic: str | None, audience: Hashable | None
) -> Subscription:
    """The hub subscription of a stream (left at the end of its `with` block)."""
    hub, last = api.engine.hub, api.plane.events.last_sequence
    if audience is None:
        return hub.subscribe(accepts, last, topic=topic)

    def encode(event: DomainEvent) -> bytes:
        return event_frame(api, event)

    return hub.subscribe_feed(audience, accepts, encode, last)


async def _deliver(
    api: FabricApi,
    call: Call,
    sub: Subscription,
    backlog: list[DomainEvent],
    ended: bool,
    closes: Callable[[DomainEvent], bool] | None,
    last_id: str | None,
    watch: _Watch,
) -> None:
    """The backlog (cut after a closing event; its first write also carries the head), then
    live events unless the stream is over."""
    closing = next(
        (i for i, event in enumerate(backlog) if closes is not None and closes(event)), None
    )
    if closing is not None:
        backlog = backlog[: closing + 1]
    for start in range(0, len(backlog), MAX_BATCH):
        chunk = backlog[start : start + MAX_BATCH]
        # The closing event's write also ends the body: one send fewer per finished stream.
        last = closing is not None and start + MAX_BATCH >= len(backlog)
        await call.raw.send_body(b"".join(event_frame(api, e) for e in chunk), more=not last)
    last_sent = backlog[-1].id if backlog else last_id
    if closing is not None or ended:
        return
    if sub.feed is not None:
        last_sent = await _live_frames(api, call, sub, last_sent)
    else:
        last_sent = await _live(api, call, sub, closes, last_sent, watch)
    if sub.overflowed:
        note = f"overflow; reconnect with Last-Event-ID: {last_sent or ''}"
        await call.raw.send_body(comment_frame(note), more=True)


async def _live(
    api: FabricApi,
    call: Call,
    sub: Subscription,
    closes: Callable[[DomainEvent], bool] | None,
    last_sent: str | None,
    watch: _Watch,
) -> str | None:
    while True:
        try:
            batch = await _next_batch(sub, watch, api.keepalive_seconds)
        except trio.EndOfChannel:
            return last_sent
        if batch is None:
            await call.raw.send_body(comment_frame("keep-alive"), more=True)
            continue
        closing = next(
            (i for i, event in enumerate(batch) if closes is not None and closes(event)), None
        )
        if closing is not None:
            batch = batch[: closing + 1]
        # The closing event's write also ends the body (see `_deliver`).
        frames = b"".join(event_frame(api, e) for e in batch)
        await call.raw.send_body(frames, more=closing is None)
        last_sent = batch[-1].id
        if closing is not None:
            return last_sent


async def _live_frames(
    api: FabricApi, call: Call, sub: Subscription, last_sent: str | None
) -> str | None:
    """A feed subscription until it ends: everything unsent (up to PUSH_FRAMES) in one write
    per wake-up; once caught up, handed over to the hub when the server can write without
    waiting (`fanout.py`). Keep-alives go out after `keepalive_seconds` with nothing written,
    by this task or by the hub."""
    sub.last_id = last_sent
    direct = call.raw.direct
    keepalive = api.keepalive_seconds
    sub.pushed_at = trio.current_time()
    while True:
        block, _ = sub.receive_frames_nowait(PUSH_FRAMES)
        if block:
            await call.raw.send_body(block, more=True)
            sub.pushed_at = trio.current_time()
            continue
        if sub.closed:
            return sub.last_id
        if direct is not None and direct.owed:
            await direct.flush()
            continue
        if direct is not None and sub.hand_over(direct):
            idle = await _while_pushed(sub, keepalive)
        else:
            with trio.move_on_after(keepalive) as waited:
                await sub.wait_for_more()
            idle = waited.cancelled_caught
        if idle:
            await call.raw.send_body(comment_frame("keep-alive"), more=True)
            sub.pushed_at = trio.current_time()


async def _while_pushed(sub: Subscription, keepalive: float) -> bool:
    """Wait while the hub writes for `sub`, until it is handed back or ended (False), or the
    hub has written nothing for `keepalive` (True: taken back, a keep-alive is due)."""
    while True:
        with trio.move_on_at(sub.pushed_at + keepalive):
            await sub.wait_for_more()
            return False
        if trio.current_time() >= sub.pushed_at + keepalive:
            sub.take_back()
            return True


async def _next_batch(
    sub: Subscription, watch: _Watch, keepalive: float
) -> list[DomainEvent] | None:
    """The next events, or None once the stream has been idle for `keepalive` (a keep-alive
    comment is due); starts the watch if it has waited WATCH_AFTER without one."""
    deadline = trio.current_time() + keepalive
    if not watch.started and keepalive > WATCH_AFTER:
        with trio.move_on_after(WATCH_AFTER):
            return await sub.receive_batch(MAX_BATCH)
        watch.start()
    with trio.move_on_at(deadline):
        return await sub.receive_batch(MAX_BATCH)
    return None


class _Watch:
    """The task that ends a stream when its client leaves, started when first needed."""

    def __init__(self, call: Call, nursery: trio.Nursery) -> None:
        self.call = call
        self.nursery = nursery
        self.started = False

    def start(self) -> None:
        if not self.started:
            self.started = True
            self.nursery.start_soon(self._run)

    async def _run(self) -> None:
        await self.call.raw.wait_disconnect()
        self.nursery.cancel_scope.cancel()
