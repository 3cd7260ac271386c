"""Server-sent events (emulator.web.sse): the framing, the Last-Event-ID helpers, the feed's
bounded buffers, and whole streams over real connections: httpx with httpx-sse over HTTP/1.1
and h2c on the emulator's own servers (and over Hypercorn), keep-alive comments, a client that
leaves, a subscriber that falls behind and resumes with Last-Event-ID, and shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from asgiserving import serving
from httpx_sse import aconnect_sse

from emulator.platform.errors import FamilyMap
from emulator.web.rawasgi import RawDispatcher, RawRequest, RawRoute
from emulator.web.sse import (
    CLOSED_COMMENT,
    FELL_BEHIND_COMMENT,
    Ending,
    EventFeed,
    ServerSentEvent,
    encode_comment,
    last_event_id,
    numeric_event_id,
    parse_last_event_id,
    stream_events,
)

# The framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (ServerSentEvent("hello"), b"data: hello\n\n"),
        (ServerSentEvent(""), b"data: \n\n"),
        (ServerSentEvent("a\nb\r\nc\rd"), b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        (ServerSentEvent("end\n"), b"data: end\ndata: \n\n"),
        (
            ServerSentEvent("{}", event="job.done", id="7", retry=2500),
            b"event: job.done\nid: 7\nretry: 2500\ndata: {}\n\n",
        ),
        (ServerSentEvent("caf\u00e9"), "data: caf\u00e9\n\n".encode()),
    ],
)
def test_an_event_is_framed_with_one_data_line_per_line(
    event: ServerSentEvent, wire: bytes
) -> None:
    assert event.encode() == wire


@pytest.mark.parametrize(
    "fields",
    [{"event": "a\nb"}, {"id": "1\r"}, {"id": "x\0y"}, {"retry": -1}],
)
def test_fields_that_would_break_the_framing_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"."):
        ServerSentEvent("x", **fields)


def test_a_comment_has_one_colon_line_per_line() -> None:
    assert encode_comment("a\nb") == b": a\n: b\n"


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        (None, None),
        ("", None),
        (b"", None),
        ("42", "42"),
        (b"job-7", "job-7"),
        ("a\nb", None),
        ("a\0", None),
    ],
)
def test_parse_last_event_id(raw: str | bytes | None, parsed: str | None) -> None:
    assert parse_last_event_id(raw) == parsed


@pytest.mark.parametrize(
    ("value", "number"), [(None, None), ("0", 0), ("17", 17), ("-1", None), ("1e3", None)]
)
def test_numeric_event_id(value: str | None, number: int | None) -> None:
    assert numeric_event_id(value) == number


# The feed -------------------------------------------------------------------------------------


async def test_a_subscriber_that_falls_behind_gets_its_buffer_then_ends() -> None:
    feed: EventFeed[int] = EventFeed(buffer=2)
    with feed.subscribe() as slow, feed.subscribe() as fast:
        assert feed.publish_nowait(1) == 2
        assert await fast.receive() == 1
        assert feed.publish_nowait(2) == 2
        assert await fast.receive() == 2
        # slow holds 1 and 2: the third does not fit, and publishing did not wait for it.
        assert feed.publish_nowait(3) == 1
        assert slow.ending is Ending.FELL_BEHIND
        assert fast.ending is Ending.OPEN
        assert [await slow.receive(), await slow.receive()] == [1, 2]
        with pytest.raises(trio.EndOfChannel):
            await slow.receive()
        assert feed.publish_nowait(4) == 1
        assert [await fast.receive(), await fast.receive()] == [3, 4]
        stats = feed.statistics()
        assert (stats.subscribers, stats.published, stats.fell_behind) == (1, 4, 1)
    assert feed.statistics().subscribers == 0


async def test_closing_a_feed_ends_every_subscription_after_its_buffer() -> None:
    feed: EventFeed[str] = EventFeed()
    with feed.subscribe() as one:
        feed.publish_nowait("last")
        feed.close()
        assert one.ending is Ending.CLOSED
        assert await one.receive() == "last"
        with pytest.raises(trio.EndOfChannel):
            await one.receive()
        with feed.subscribe() as late, pytest.raises(trio.EndOfChannel):
            await late.receive()
        assert late.ending is Ending.CLOSED
    assert feed.publish_nowait("after close") == 0
    assert feed.statistics().published == 1


def test_a_feed_needs_a_buffer() -> None:
    with pytest.raises(ValueError, match="buffer"):
        EventFeed(buffer=0)


# Whole streams --------------------------------------------------------------------------------


@attrs.define
class EventsApp:
    """GET /events streams `feed`, after replaying `log` past the client's Last-Event-ID."""

    feed: EventFeed[ServerSentEvent]
    keepalive: float = 15.0
    log: list[ServerSentEvent] = attrs.field(factory=list)
    endings: list[Ending] = attrs.field(factory=list)
    resumed_from: list[str | None] = attrs.field(factory=list)
    handler_done: trio.Event = attrs.field(factory=trio.Event)

    def publish(self, data: str, event: str | None = None) -> ServerSentEvent:
        item = ServerSentEvent(data, event=event, id=str(len(self.log)))
        self.log.append(item)
        self.feed.publish_nowait(item)
        return item

    async def handler(self, request: RawRequest) -> None:
        try:
            resume = last_event_id(request)
            self.resumed_from.append(resume)
            number = numeric_event_id(resume)
            with self.feed.subscribe() as subscription:
                replay = self.log[number + 1 :] if number is not None else []
                ending = await stream_events(
                    request, subscription, keepalive=self.keepalive, first=replay
                )
                self.endings.append(ending)
        finally:
            self.handler_done.set()

    def asgi(self) -> RawDispatcher:
        return RawDispatcher(not_found, [RawRoute("GET", "/events", self.handler)], FamilyMap())


async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("server", "http2"), [("emulator", False), ("emulator", True), ("hypercorn", False)]
)
async def test_events_reach_a_real_sse_client_and_shutdown_ends_the_stream(
    server: str, http2: bool
) -> None:
    app = EventsApp(EventFeed())
    received: list[tuple[str, str, str]] = []
    with trio.fail_after(10):
        async with (
            serving(app.asgi(), server) as served,
            httpx.AsyncClient(http1=not http2, http2=http2, base_url=served.url) as client,
            aconnect_sse(client, "GET", "/events") as source,
        ):
            assert source.response.status_code == 200
            assert source.response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert source.response.headers["content-type"].startswith("text/event-stream")
            # The head has arrived, so the handler is subscribed.
            assert app.feed.statistics().subscribers == 1
            app.publish("first")
            app.publish("line one\nline two", event="multi")
            app.publish("after", event="x")
            app.feed.close()
            async for event in source.aiter_sse():
                received.append((event.event, event.data, event.id))
            await app.handler_done.wait()
    assert received == [
        ("message", "first", "0"),
        ("multi", "line one\nline two", "1"),
        ("x", "after", "2"),
    ]
    assert app.endings == [Ending.CLOSED]


async def read_until(chunks: AsyncIterator[bytes], marker: bytes) -> bytes:
    """Body bytes up to (at least) the first `marker`, from one iterator over a response."""
    seen = b""
    async for chunk in chunks:
        seen += chunk
        if marker in seen:
            return seen
    raise AssertionError(f"stream ended without {marker!r}: {seen!r}")


@pytest.mark.parametrize("http2", [False, True])
async def test_an_idle_stream_gets_keepalive_comments(http2: bool) -> None:
    app = EventsApp(EventFeed(), keepalive=0.05)
    with trio.fail_after(10):
        async with (
            serving(app.asgi()) as served,
            httpx.AsyncClient(http1=not http2, http2=http2, base_url=served.url) as client,
            client.stream("GET", "/events") as response,
        ):
            chunks = response.aiter_raw()
            seen = await read_until(chunks, b":\n:\n")
            app.publish("x")
            seen += await read_until(chunks, b"data: x\n\n")
            app.feed.close()
            async for chunk in chunks:
                seen += chunk
    assert seen.startswith(b":\n:\n")
    assert seen.endswith(b"data: x\n\n" + encode_comment(CLOSED_COMMENT))


@pytest.mark.parametrize(
    ("server", "http2"), [("emulator", False), ("emulator", True), ("hypercorn", False)]
)
async def test_a_client_that_leaves_ends_the_handler_and_its_subscription(
    server: str, http2: bool
) -> None:
    app = EventsApp(EventFeed())
    with trio.fail_after(10):
        async with serving(app.asgi(), server) as served:
            async with (
                httpx.AsyncClient(http1=not http2, http2=http2, base_url=served.url) as client,
                client.stream("GET", "/events") as response,
            ):
                app.publish("one")
                await read_until(response.aiter_raw(), b"data: one\n\n")
            # The client (and its connection) is gone while nothing is being published.
            await app.handler_done.wait()
            await app.feed.wait_subscribers(0)
    assert app.endings == [Ending.CLIENT_GONE]


async def test_a_subscriber_that_fell_behind_resumes_with_last_event_id() -> None:
    app = EventsApp(EventFeed(buffer=2))
    with trio.fail_after(10):
        async with (
            serving(app.asgi()) as served,
            httpx.AsyncClient(base_url=served.url) as client,
        ):
            async with client.stream("GET", "/events") as response:
                # The writer is parked waiting for an event (its head write has returned).
                await trio.testing.wait_all_tasks_blocked()
                # Four events before the writer runs again: the first goes straight to the
                # waiting writer, the buffer holds two, the fourth does not fit.
                for data in ("a", "b", "c", "d"):
                    app.publish(data)
                first = b"".join([chunk async for chunk in response.aiter_raw()])
            assert first == (
                b"id: 0\ndata: a\n\nid: 1\ndata: b\n\nid: 2\ndata: c\n\n"
                + encode_comment(FELL_BEHIND_COMMENT)
            )
            app.publish("e")
            events: list[tuple[str, str]] = []
            async with aconnect_sse(
                client, "GET", "/events", headers={"Last-Event-ID": "2"}
            ) as source:
                app.publish("f")
                app.feed.close()
                async for event in source.aiter_sse():
                    events.append((event.id, event.data))
    assert app.resumed_from == [None, "2"]
    assert events == [("3", "d"), ("4", "e"), ("5", "f")]
    assert app.endings == [Ending.FELL_BEHIND, Ending.CLOSED]
    assert app.feed.statistics().fell_behind == 1


async def test_head_gets_the_event_stream_head_only() -> None:
    app = EventsApp(EventFeed())
    routes = [RawRoute("HEAD", "/events", app.handler)]
    with trio.fail_after(10):
        async with (
            serving(RawDispatcher(not_found, routes, FamilyMap())) as served,
            httpx.AsyncClient(base_url=served.url) as client,
        ):
            response = await client.head("/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert app.feed.statistics().subscribers == 0
