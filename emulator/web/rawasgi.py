"""Raw ASGI routes in front of the Quart app, for the few routes where each microsecond counts.

Owns `RawRoute` (method, path pattern, handler), `RawRequest` (what a handler gets: headers, path
parameters, a body reader with limits, disconnect detection, response helpers) and
`RawDispatcher`, an ASGI app that serves the requests matching a raw route and hands everything
else to the wrapped app (Quart). Errors a raw handler raises are rendered exactly as Quart would
render them: an `ApiError` in its own family, anything else as a logged 500 in the family of the
path (`FamilyMap`).

Why raw routes exist: Quart reads a request body into memory as fast as the server delivers it
(no backpressure) and costs roughly 0.1 ms per request; a raw handler reads `receive()` only
when it wants the next chunk, so the server's bounded queue pushes back on the sender.

ASGI `websocket` scopes go only to raw routes with the method `WEBSOCKET` (emulator.web.websocket
builds them); any other WebSocket is refused before the handshake (403), and plain HTTP on a
WebSocket-only path is a 426.

Two things a raw handler must do itself, because no framework does it: notice a client that
went away (`cancelled_when_gone`, `wait_disconnect`, or `ClientGone` from the body reader; the
server does not cancel a raw handler), and never start a response twice (`started`).

`with_automatic_methods` adds what Quart does by itself for every route: HEAD served by the
GET handler (the server drops the body) and OPTIONS answered 200 with `Allow`, so moving a route
from a blueprint to the raw table changes nothing on the wire.

A path matched by a raw route belongs wholly to the raw table: another method on it is a 405
with the raw methods in `Allow`, never a fall-through.

Everything else goes to the wrapped app with a bounded `receive` (`bounded_receive`): Quart's
request task reads the whole body into memory as fast as the server delivers it, whether or not
the route ever reads it. So the dispatcher hands it at most `body_limit` bytes (the largest body
any Quart route accepts, `Settings.max_body_bytes`, plus one byte so the route's own check sees
it is too large) and then stops reading: the server's flow control (TCP on HTTP/1.1, the stream
window on HTTP/2) holds the sender back instead of the emulator's memory growing.

Generic: knows nothing about Foundry; imports neither quart nor hypercorn.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import attrs
import trio

from ..asgi import ASGIApp, Headers, Message, Receive, Scope, Send
from ..platform.errors import (
    BODY_LIMIT_SETTING,
    ApiError,
    ErrorFamily,
    FamilyMap,
    framework_error,
    too_large,
)

log = logging.getLogger("emulator.rawasgi")

Handler = Callable[["RawRequest"], Awaitable[None]]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
# A server may put a request's whole body in `scope["extensions"]` under this key when it has
# already arrived with the head (emulator.transport.h1 does); `receive()` still delivers it as well.
BODY_EXTENSION = "emulator.body"
# A server may offer, under this key, a `DirectBody` for the response (emulator.transport.h1
# does over plain TCP): body pieces written at once from any code on the loop, no task needed.
DIRECT_EXTENSION = "emulator.direct_body"
# The scope extension under which a server offers a `DisconnectWatch` for the request.
WATCH_EXTENSION = "emulator.disconnect_watch"
# The method of a raw route that serves WebSocket connections (emulator.web.websocket); an ASGI
# `websocket` scope is matched against these routes only.
WEBSOCKET = "WEBSOCKET"


class DisconnectWatch(Protocol):
    """Calls back when the client goes away, without a task: cheaper than a task waiting for
    `http.disconnect` and cancelled when the answer comes first."""

    def watch_disconnect(self, gone: Callable[[], None]) -> bool:
        """Call `gone()` once the client has gone away (at once if it has); False when this
        request cannot be watched so (the caller waits in a task instead)."""

    def unwatch_disconnect(self) -> None:
        """Stop watching (idempotent)."""


class DirectBody(Protocol):
    """Writes pieces of a streaming response's body without waiting, for code that feeds
    many responses from one task (an event fan-out): a system call per piece instead of a task
    switch. Only once the head has gone out with `more_body`; never while a `send` of the same
    response is waiting."""

    @property
    def owed(self) -> bool:
        """Whether bytes taken by `send_nowait` are still waiting to be written: `flush` must
        come before the next `send_nowait` can take anything."""

    def send_nowait(self, body: bytes) -> bool:
        """Take `body` now: written at once as far as the socket takes it, the rest `owed`.
        False when it cannot (a write in progress, bytes owed, the connection broken): nothing
        was taken; send it the usual way."""

    async def flush(self) -> None:
        """Write the owed bytes (a client that does not read is cut off by the server's send
        timeout)."""


class ClientGone(Exception):
    """The client disconnected (or the server dropped the stream) before the exchange finished."""


@attrs.frozen
class RawRoute:
    """`pattern` is a path with `{name}` segments, e.g. `/runtimes/{runtime_id}/job`."""

    method: str
    pattern: str
    handler: Handler
    # One line for generated API documentation.
    summary: str = ""
    segments: tuple[str | None, ...] = attrs.field(init=False)
    names: tuple[str, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not self.pattern.startswith("/"):
            raise ValueError(f"a route pattern starts with '/': {self.pattern!r}")
        segments: list[str | None] = []
        names: list[str] = []
        for part in self.pattern.split("/")[1:]:
            if part.startswith("{") and part.endswith("}"):
                segments.append(None)
                names.append(part[1:-1])
            else:
                segments.append(part)
        object.__setattr__(self, "segments", tuple(segments))
        object.__setattr__(self, "names", tuple(names))

    @property
    def rule(self) -> str:
        """The pattern with `<name>` parameters, as Quart/Werkzeug rules write them."""
        return self.pattern.replace("{", "<").replace("}", ">")

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        values: list[str] = []
        for expected, part in zip(self.segments, parts, strict=True):
            if expected is None:
                if not part:
                    return None
                values.append(part)
            elif expected != part:
                return None
        return dict(zip(self.names, values, strict=True))


class RawRequest:
    """One request served by a raw route."""

    __slots__ = (
        "_headers",
        "_receive",
        "_send",
        "body_done",
        "family",
        "finished",
        "params",
        "scope",
        "started",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        params: dict[str, str],
        family: ErrorFamily,
    ) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.params = params
        self.family = family
        self.started = False
        self.finished = False
        self.body_done = False
        self._headers: dict[bytes, bytes] | None = None

    @property
    def method(self) -> str:
        return str(self.scope.get("method", WEBSOCKET))

    @property
    def asgi_receive(self) -> Receive:
        """The ASGI `receive` callable (for protocols built on top, e.g. WebSocket)."""
        return self._receive

    @property
    def asgi_send(self) -> Send:
        return self._send

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def header(self, name: bytes) -> str | None:
        """The first value of a header (`name` in lower case), decoded as Latin-1."""
        headers = self._headers
        if headers is None:
            # Built once, from the last pair to the first, so the first value wins.
            headers = self._headers = {
                bytes(key): value for key, value in reversed(self.scope["headers"])
            }
        value = headers.get(name)
        return None if value is None else bytes(value).decode("latin-1")

    @property
    def direct(self) -> DirectBody | None:
        """The server's `DirectBody` for this response, if it offers one."""
        extensions = self.scope.get("extensions") or {}
        direct: DirectBody | None = extensions.get(DIRECT_EXTENSION)
        return direct

    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value.strip())

    # Reading ------------------------------------------------------------------------------------

    async def receive_chunk(self, idle_seconds: float) -> tuple[bytes, bool]:
        """The next piece of the request body and whether more follows.

        Raises ClientGone when the client went away, and a 408 ApiError when nothing arrives
        within `idle_seconds`.
        """
        if self.body_done:
            await trio.lowlevel.checkpoint()
            return b"", False
        ready = self._prefetched()
        if ready is not None:
            return ready, False
        with trio.move_on_after(idle_seconds):
            message = await self._receive()
            kind = message["type"]
            if kind == "http.request":
                more = bool(message.get("more_body", False))
                if not more:
                    self.body_done = True
                return bytes(message.get("body", b"")), more
            raise ClientGone(f"{kind} while reading the request body")
        raise framework_error(self.family, 408, self.path, self.method)

    def _prefetched(self) -> bytes | None:
        """The whole body if the server read it with the head (no wait, so no timer either);
        it then counts as read."""
        ready = (self.scope.get("extensions") or {}).get(BODY_EXTENSION)
        if ready is None:
            return None
        self.body_done = True
        return bytes(ready)

    async def read_body(
        self, limit: int, seconds: float, *, setting: str = BODY_LIMIT_SETTING
    ) -> bytes:
        """The whole body (413 beyond `limit` bytes, naming the limit and `setting`, the
        variable that raises it; 408 unless it arrives within `seconds`)."""
        declared = self.content_length()
        if declared is not None and declared > limit:
            raise too_large(self.family, self.path, self.method, limit, setting)
        if not self.body_done:
            ready = self._prefetched()
            if ready is not None:
                if len(ready) > limit:
                    raise too_large(self.family, self.path, self.method, limit, setting)
                return ready
        chunks = bytearray()
        if self.body_done:
            await trio.lowlevel.checkpoint()
            return b""
        # One timeout scope for the whole body (each piece's idle wait is within it anyway).
        with trio.move_on_after(seconds):
            while True:
                message = await self._receive()
                kind = message["type"]
                if kind != "http.request":
                    raise ClientGone(f"{kind} while reading the request body")
                chunks += message.get("body", b"")
                if len(chunks) > limit:
                    raise too_large(self.family, self.path, self.method, limit, setting)
                if not message.get("more_body", False):
                    self.body_done = True
                    return bytes(chunks)
        raise framework_error(self.family, 408, self.path, self.method)

    async def wait_disconnect(self) -> None:
        """Return once the client has gone away. Call it only after the body has been read."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return

    @contextlib.asynccontextmanager
    async def cancelled_when_gone(self) -> AsyncIterator[trio.CancelScope]:
        """A cancel scope the client's going away cancels; enter it once the body has been
        read. Watched by the server without a task where it offers a `DisconnectWatch`, else
        by a task waiting for `http.disconnect`."""
        extensions = self.scope.get("extensions") or {}
        watch: DisconnectWatch | None = extensions.get(WATCH_EXTENSION)
        scope = trio.CancelScope()
        if watch is not None and watch.watch_disconnect(scope.cancel):
            try:
                with scope:
                    yield scope
            finally:
                watch.unwatch_disconnect()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_when_gone, nursery.cancel_scope)
            try:
                yield nursery.cancel_scope
            finally:
                nursery.cancel_scope.cancel()

    async def _cancel_when_gone(self, scope: trio.CancelScope) -> None:
        try:
            await self.wait_disconnect()
        except Exception:
            # The server could not tell; the work still ends when it ends.
            log.debug("no disconnect watch on %s", self.path)
            await trio.sleep_forever()
        scope.cancel()

    # Responding ---------------------------------------------------------------------------------

    async def _transmit(self, message: Message) -> None:
        try:
            await self._send(message)
        except trio.Cancelled:
            raise
        except Exception as error:
            # The server raises protocol errors when the connection or stream is already gone.
            raise ClientGone(f"could not send: {error!r}") from error

    async def start(self, status: int, headers: Headers, *, trailers: bool = False) -> None:
        """The response head; with `trailers`, `send_trailers` must follow the last body (only
        where the server offers the ASGI `http.response.trailers` extension: HTTP/2)."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        message: Message = {"type": "http.response.start", "status": status, "headers": headers}
        if trailers:
            message["trailers"] = True
        await self._transmit(message)

    async def send_trailers(self, headers: Headers) -> None:
        """The trailers of a response started with `trailers=True`, after its last body."""
        await self._transmit({"type": "http.response.trailers", "headers": headers})

    async def send_body(self, body: bytes, *, more: bool) -> None:
        if not more:
            self.finished = True
        await self._transmit({"type": "http.response.body", "body": body, "more_body": more})

    async def respond(
        self, status: int, body: bytes = b"", headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        """A whole response in one go; a Content-Length is added."""
        all_headers = [*headers, (b"content-length", str(len(body)).encode("ascii"))]
        await self.start(status, all_headers)
        await self.send_body(body, more=False)

    async def respond_json(
        self, status: int, data: Any, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        await self.respond(status, body, [*JSON_HEADERS, *headers])

    async def respond_error(self, error: ApiError) -> None:
        headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in error.headers.items()
        ]
        await self.respond_json(error.status, error.body(), headers)


def _split_path(scope: Scope) -> list[str] | None:
    """The path's segments, each percent-decoded on its own (an encoded '/' stays inside)."""
    raw = scope.get("raw_path")
    if not raw:
        return str(scope["path"]).split("/")[1:]
    path = bytes(raw).split(b"?", 1)[0]
    try:
        if b"%" not in path:
            return path.decode("utf-8").split("/")[1:]
        parts = path.split(b"/")[1:]
        return [
            (unquote_to_bytes(part) if b"%" in part else part).decode("utf-8") for part in parts
        ]
    except UnicodeDecodeError:
        return None


def bounded_receive(receive: Receive, limit: int) -> Receive:
    """`receive`, delivering at most `limit` + 1 body bytes; after that it waits (until the
    request ends and cancels it) without reading, so the sender is held back by the server."""
    delivered = 0

    async def bounded() -> Message:
        nonlocal delivered
        if delivered > limit:
            await trio.sleep_forever()
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if len(body) > limit + 1 - delivered:
                message = {
                    "type": "http.request",
                    "body": bytes(body[: limit + 1 - delivered]),
                    "more_body": True,
                }
            delivered += len(message.get("body", b""))
        return message

    return bounded


@attrs.frozen
class _RouteIndex:
    """The routes with one segment count, bucketed by the literal at the position that tells
    them apart best: a request is compared only with the routes that have its segment there
    (or a parameter there), in their declared order, so the first match is the same as over
    the whole list."""

    position: int
    buckets: Mapping[str, tuple[RawRoute, ...]]
    # The routes with a parameter at `position`: all a segment with no bucket can match.
    others: tuple[RawRoute, ...]

    @classmethod
    def build(cls, routes: Sequence[RawRoute]) -> _RouteIndex:
        length = len(routes[0].segments)

        def literals(position: int) -> set[str]:
            return {s for s in (r.segments[position] for r in routes) if s is not None}

        position = max(range(length), key=lambda p: len(literals(p)), default=0)
        if not length:
            return cls(0, {}, tuple(routes))
        others = tuple(r for r in routes if r.segments[position] is None)
        buckets = {
            literal: tuple(r for r in routes if r.segments[position] in (literal, None))
            for literal in literals(position)
        }
        return cls(position, buckets, others)

    def candidates(self, parts: Sequence[str]) -> tuple[RawRoute, ...]:
        if not parts:
            return self.others
        return self.buckets.get(parts[self.position], self.others)


class RawDispatcher:
    """An ASGI app: raw routes first, then the wrapped app (given at most `body_limit` bytes of
    a request body, see `bounded_receive`)."""

    def __init__(
        self,
        fallback: ASGIApp,
        routes: Iterable[RawRoute],
        families: FamilyMap,
        body_limit: int = 8 * 1024 * 1024,
    ) -> None:
        self.fallback = fallback
        self.body_limit = body_limit
        self.routes = tuple(routes)
        self.families = families
        # A route's error family follows from its literal prefix, so it is looked up once.
        self._families = {id(route): families.for_path(route.pattern) for route in self.routes}
        self._by_length = {
            length: _RouteIndex.build([r for r in self.routes if len(r.segments) == length])
            for length in {len(route.segments) for route in self.routes}
        }

    def _match(self, scope: Scope) -> tuple[RawRoute | None, dict[str, str], list[str]]:
        """The route for this method and path, or (None, {}, allowed methods on this path)."""
        parts = _split_path(scope)
        if parts is None:
            return None, {}, []
        method = scope.get("method", WEBSOCKET)
        allowed: list[str] = []
        index = self._by_length.get(len(parts))
        candidates = () if index is None else index.candidates(parts)
        for route in candidates:
            params = route.match(parts)
            if params is None:
                continue
            if route.method == method:
                return route, params, []
            allowed.append(route.method)
        return None, {}, allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.fallback(scope, receive, send)
            return
        if not self._by_length:
            await self.fallback(scope, bounded_receive(receive, self.body_limit), send)
            return
        route, params, allowed = self._match(scope)
        if route is not None and route.method == WEBSOCKET:
            # Plain HTTP naming the WebSocket pseudo-method: a WebSocket-only path all the same.
            route, params, allowed = None, {}, [WEBSOCKET]
        if route is None and not allowed:
            await self.fallback(scope, bounded_receive(receive, self.body_limit), send)
            return
        if route is None:
            family = self.families.for_path(str(scope["path"]))
        else:
            family = self._families[id(route)]
        request = RawRequest(scope, receive, send, params, family)
        if route is None:
            if set(allowed) == {WEBSOCKET}:
                # A WebSocket endpoint asked for with plain HTTP.
                error = framework_error(family, 426, request.path, request.method)
                error.description = f"{request.path} serves WebSocket connections only."
                error.headers["Upgrade"] = "websocket"
                error.headers["Connection"] = "Upgrade"
            else:
                error = framework_error(family, 405, request.path, request.method)
                error.headers["Allow"] = ", ".join(sorted(set(allowed)))
            await _answer_error(request, error)
            return
        await self._run(route, request)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket goes to its raw route; anything else is refused before the handshake
        (`websocket.close` before `websocket.accept`: the server answers 403). Never Quart."""
        route, params, _ = self._match(scope)
        if route is None:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
            return
        request = RawRequest(scope, receive, send, params, self._families[id(route)])
        try:
            await route.handler(request)
        except Exception as error:
            log.error("unhandled error on websocket %s", request.path, exc_info=error)

    async def _run(self, route: RawRoute, request: RawRequest) -> None:
        try:
            await route.handler(request)
        except ApiError as error:
            await _answer_error(request, error)
        except ClientGone:
            pass
        except Exception as error:
            # A domain error of the service, translated once by its family.
            translated = request.family.translate(error)
            if translated is not None:
                await _answer_error(request, translated)
                return
            log.error("unhandled error on %s %s", request.method, request.path, exc_info=error)
            await _answer_error(
                request, framework_error(request.family, 500, request.path, request.method)
            )


async def _answer_error(request: RawRequest, error: ApiError) -> None:
    """Send `error` if nothing was sent yet; a response already under way is cut instead."""
    if request.started:
        # Returning without finishing the body makes the server close the stream: the client
        # sees a truncated response rather than a well-formed lie.
        log.info(
            "cut a response already under way on %s %s: %s", request.method, request.path, error
        )
        return
    with contextlib.suppress(ClientGone):
        await request.respond_error(error)


def merge_routes(groups: Iterable[Sequence[RawRoute]]) -> list[RawRoute]:
    """All routes of several services; a (method, pattern) pair may appear only once."""
    seen: dict[tuple[str, str], RawRoute] = {}
    for group in groups:
        for route in group:
            key = (route.method, route.pattern)
            if key in seen:
                raise ValueError(f"two raw routes for {route.method} {route.pattern}")
            seen[key] = route
    return list(seen.values())


def headers_of(mapping: Mapping[str, str]) -> Headers:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in mapping.items()
    ]


# Quart's automatic OPTIONS answer has an empty HTML body.
_OPTIONS_TYPE = (b"content-type", b"text/html; charset=utf-8")


def with_automatic_methods(routes: Iterable[RawRoute]) -> list[RawRoute]:
    """`routes` plus a HEAD route beside each GET route and an OPTIONS route per path."""
    result = list(routes)
    methods: dict[str, set[str]] = {}
    for route in result:
        if route.method != WEBSOCKET:
            methods.setdefault(route.pattern, set()).add(route.method)
    for route in list(result):
        if route.method == "GET" and "HEAD" not in methods[route.pattern]:
            result.append(RawRoute("HEAD", route.pattern, route.handler, route.summary))
            methods[route.pattern].add("HEAD")
    for pattern, known in methods.items():
        if "OPTIONS" not in known:
            allow = ", ".join(sorted(known | {"OPTIONS"}))
            result.append(RawRoute("OPTIONS", pattern, _options(allow)))
    return result


def _options(allow: str) -> Handler:
    headers = [_OPTIONS_TYPE, (b"allow", allow.encode("ascii"))]

    async def options(raw: RawRequest) -> None:
        await raw.respond(200, b"", headers)

    return options
