"""Server-sent events (the WHATWG `text/event-stream` format) for raw ASGI routes.

Owns three things a service needs to push events to its clients:

- `ServerSentEvent`, one event and its wire framing (`event:`, `id:`, `retry:` and one `data:`
  line per line of the payload, whatever line ending the payload used), plus comment lines;
- `EventFeed` and `Subscription`, a fan-out with one bounded buffer per subscriber. Publishing
  (`publish_nowait`) never blocks the producer. A subscriber whose buffer is full when an event
  is published has fallen behind: it gets every event already buffered, then its stream ends
  with `FELL_BEHIND_COMMENT`, and the client reconnects with `Last-Event-ID` (an `EventSource`
  does that by itself) to resume from the event log the service keeps. Memory per subscriber is
  therefore bounded by the buffer size, never by how slow a client reads;
- `stream_events`, the writer for a raw route: response head, the events of one subscription,
  a keep-alive comment after every `keepalive` seconds of silence (so proxies and clients do
  not time out an idle stream), and a clean end when the client goes away (the route returns;
  no task is left behind), when the feed closes (server shutdown: call `EventFeed.close` from
  the service's `begin_shutdown`; the stream ends with `CLOSED_COMMENT` and a complete
  response) or when the subscriber fell behind.

`last_event_id` and `parse_last_event_id` read the header a reconnecting client sends.

Generic: knows nothing about any service; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Generic, TypeVar

import attrs
import trio

from ..asgi import Headers
from .rawasgi import ClientGone, RawRequest

# How often an idle stream gets a comment line, by default (the WHATWG spec suggests about 15 s).
KEEPALIVE_SECONDS = 15.0
# How many events a subscriber may have waiting before it counts as fallen behind.
DEFAULT_BUFFER = 64
# The comment lines that end a stream on purpose; clients see them just before the end.
FELL_BEHIND_COMMENT = "fell behind: reconnect with Last-Event-ID to resume"
CLOSED_COMMENT = "server shutting down"
# Comments go out without a blank line after them: a blank line is what dispatches an event,
# and some clients (httpx-sse 0.4) then dispatch an empty event that repeats the last id.
KEEPALIVE_COMMENT = b":\n"
EVENT_STREAM_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # Tell reverse proxies (nginx) not to hold events back in a buffer.
    (b"x-accel-buffering", b"no"),
]

T = TypeVar("T")


def _single_line(name: str, value: str) -> None:
    if "\n" in value or "\r" in value:
        raise ValueError(f"an event's {name} must be one line: {value!r}")


@attrs.frozen
class ServerSentEvent:
    """One event. `data` may hold several lines; `retry` is in milliseconds."""

    data: str = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.event is not None:
            _single_line("event", self.event)
        if self.id is not None:
            _single_line("id", self.id)
            if "\0" in self.id:
                # A client ignores such an id (WHATWG HTML, 9.2.6), so resuming would break.
                raise ValueError(f"an event id must not contain NUL: {self.id!r}")
        if self.retry is not None and self.retry < 0:
            raise ValueError(f"retry is a non-negative number of milliseconds: {self.retry}")

    def encode(self) -> bytes:
        """The event on the wire, ending with the blank line that dispatches it."""
        lines: list[str] = []
        if self.event is not None:
            lines.append(f"event: {self.event}")
        if self.id is not None:
            lines.append(f"id: {self.id}")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}")
        # A client splits on CRLF, CR or LF alike; each piece becomes its own data line.
        for line in self.data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            lines.append(f"data: {line}")
        return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_comment(text: str) -> bytes:
    """Comment lines (ignored by clients), one per line of `text`; no blank line follows (see
    KEEPALIVE_COMMENT)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(f": {line}\n" for line in lines).encode("utf-8")


def parse_last_event_id(value: str | bytes | None) -> str | None:
    """The id a reconnecting client sent in `Last-Event-ID`, or None when it sent none (or an
    empty one, which means "from the start"). A value with a NUL, CR or LF cannot be an id the
    emulator gave out and counts as none."""
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if not text or any(char in text for char in "\0\r\n"):
        return None
    return text


def last_event_id(request: RawRequest) -> str | None:
    """`parse_last_event_id` of the request's `Last-Event-ID` header."""
    raw = None
    for name, value in request.scope["headers"]:
        if bytes(name).lower() == b"last-event-id":
            raw = bytes(value)
            break
    return parse_last_event_id(raw)


def numeric_event_id(value: str | None) -> int | None:
    """A Last-Event-ID for feeds that number their events 0, 1, 2, ...: the number, or None
    when absent or not a plain non-negative decimal."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


class Ending(enum.Enum):
    """Why a subscription ended (or `OPEN` while it has not)."""

    OPEN = "open"
    FELL_BEHIND = "fell behind"
    CLOSED = "closed"
    CLIENT_GONE = "client gone"


# Which endings may follow which: an ended subscription stays ended with its first reason.
_ENDINGS = {
    Ending.OPEN: frozenset((Ending.FELL_BEHIND, Ending.CLOSED, Ending.CLIENT_GONE)),
    Ending.FELL_BEHIND: frozenset(),
    Ending.CLOSED: frozenset(),
    Ending.CLIENT_GONE: frozenset(),
}


class Subscription(Generic[T]):
    """One subscriber's bounded buffer. Use it as a context manager (from
    `EventFeed.subscribe`) so it leaves the feed when the subscriber is done."""

    def __init__(self, feed: EventFeed[T], buffer: int) -> None:
        self._feed = feed
        self.buffer = buffer
        self._send, self._receive = trio.open_memory_channel[T](buffer)
        self.ending = Ending.OPEN

    def _end(self, ending: Ending) -> None:
        """Record why the subscription ends (the first reason wins) and stop its input; what
        is already buffered can still be taken."""
        if ending in _ENDINGS[self.ending]:
            self.ending = ending
            self._send.close()
            self._feed._left(self)

    def offer_nowait(self, item: T) -> bool:
        """Buffer `item`; a full buffer ends the subscription as fallen behind. Never blocks."""
        if self.ending is not Ending.OPEN:
            return False
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self._end(Ending.FELL_BEHIND)
            return False
        return True

    async def receive(self) -> T:
        """The next item; raises trio.EndOfChannel once the subscription has ended and its
        buffer is empty (`ending` then says why)."""
        return await self._receive.receive()

    def receive_ready_nowait(self, limit: int) -> list[T]:
        """Up to `limit` items already buffered, without waiting."""
        items: list[T] = []
        while len(items) < limit:
            try:
                items.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        return items

    def close(self, ending: Ending = Ending.CLIENT_GONE) -> None:
        """Leave the feed (idempotent)."""
        self._end(ending)

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self._receive.close()


@attrs.frozen
class FeedStatistics:
    subscribers: int
    published: int
    fell_behind: int
    closed: bool


class EventFeed(Generic[T]):
    """A fan-out of items (usually `ServerSentEvent`s) to any number of subscribers, each with
    its own buffer of `buffer` items."""

    def __init__(self, *, buffer: int = DEFAULT_BUFFER) -> None:
        if buffer < 1:
            raise ValueError("a subscriber's buffer holds at least one event")
        self.buffer = buffer
        self._subscribers: set[Subscription[T]] = set()
        self._published = 0
        self._fell_behind = 0
        self._closed = False
        self._changed = trio.Event()

    def subscribe(self) -> Subscription[T]:
        """A new subscription; it sees every item published from now on. After `close`, it is
        already ended."""
        subscription = Subscription(self, self.buffer)
        if self._closed:
            subscription.close(Ending.CLOSED)
        else:
            self._subscribers.add(subscription)
        self._notify()
        return subscription

    def publish_nowait(self, item: T) -> int:
        """Give `item` to every subscriber; returns how many took it. Never blocks: a
        subscriber with a full buffer is ended instead (see `Subscription.offer_nowait`).
        After `close` nobody takes it (0): a producer racing the shutdown is not an error."""
        if self._closed:
            return 0
        self._published += 1
        delivered = 0
        for subscription in list(self._subscribers):
            if subscription.offer_nowait(item):
                delivered += 1
            else:
                self._fell_behind += 1
        return delivered

    def close(self) -> None:
        """End every subscription (their buffered items are still delivered); later
        subscriptions start ended. For server shutdown."""
        self._closed = True
        for subscription in list(self._subscribers):
            subscription.close(Ending.CLOSED)

    def _left(self, subscription: Subscription[T]) -> None:
        self._subscribers.discard(subscription)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_subscribers(self, count: int) -> None:
        """Wait until exactly `count` subscriptions are open (for tests and orderly starts)."""
        while len(self._subscribers) != count:
            await self._changed.wait()

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(
            subscribers=len(self._subscribers),
            published=self._published,
            fell_behind=self._fell_behind,
            closed=self._closed,
        )


async def stream_events(
    request: RawRequest,
    subscription: Subscription[ServerSentEvent],
    *,
    keepalive: float = KEEPALIVE_SECONDS,
    first: Iterable[ServerSentEvent] = (),
    headers: Iterable[tuple[bytes, bytes]] = (),
    retry: int | None = None,
) -> Ending:
    """Answer `request` with an event stream: `first` (e.g. events replayed after a
    Last-Event-ID), then the subscription's events as they come, until it ends or the client
    goes away. Returns why the stream ended. A HEAD request gets the head only (and the
    result CLIENT_GONE: nothing was streamed).

    Events already waiting are written together in one send. The client is watched for
    disconnecting the whole time, so a stream with nothing to say still ends when it leaves.
    """
    await request.start(200, [*EVENT_STREAM_HEADERS, *headers])
    if request.method == "HEAD":
        await request.send_body(b"", more=False)
        return Ending.CLIENT_GONE
    opening = b"".join(event.encode() for event in first)
    if retry is not None:
        opening = f"retry: {int(retry)}\n\n".encode("ascii") + opening
    # Stays CLIENT_GONE when the watcher cancels the pump (the client left).
    ending = Ending.CLIENT_GONE
    async with request.cancelled_when_gone():
        try:
            # The head goes out now even without an event, so the client knows it is connected.
            await request.send_body(opening, more=True)
            ending = await _pump(request, subscription, keepalive)
        except ClientGone:
            ending = Ending.CLIENT_GONE
    if ending is Ending.CLIENT_GONE:
        subscription.close(Ending.CLIENT_GONE)
        return ending
    comment = FELL_BEHIND_COMMENT if ending is Ending.FELL_BEHIND else CLOSED_COMMENT
    try:
        await request.send_body(encode_comment(comment), more=False)
    except ClientGone:
        return Ending.CLIENT_GONE
    return ending


async def _pump(
    request: RawRequest, subscription: Subscription[ServerSentEvent], keepalive: float
) -> Ending:
    """Write events until the subscription ends; its ending. Only the wait for an event is
    timed: a write held back by a slow client is never cut (that would corrupt the stream)."""
    while True:
        with trio.move_on_after(keepalive) as idle:
            try:
                event = await subscription.receive()
            except trio.EndOfChannel:
                return subscription.ending
        if idle.cancelled_caught:
            await request.send_body(KEEPALIVE_COMMENT, more=True)
            continue
        ready = subscription.receive_ready_nowait(subscription.buffer)
        out = event.encode() + b"".join(more.encode() for more in ready)
        await request.send_body(out, more=True)
