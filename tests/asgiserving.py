"""Serving a small ASGI app on 127.0.0.1 port 0 for transport and web tests, on either HTTP
server: the emulator's own (HTTP/1.1 with h2c by preface, as the plain listener does) or
Hypercorn's trio worker with the emulator's compatibility patches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from emulator.platform.errors import FamilyMap
from emulator.transport import hypercorn_compat
from emulator.transport.h1 import H1Server
from emulator.transport.h2 import H2Server
from emulator.transport.httpcommon import ServerLimits
from emulator.transport.websocket import WebSocketLimits

App = Callable[[dict[str, Any], Any, Any], Any]
LIMITS = ServerLimits(max_header_bytes=64 * 1024, keep_alive_timeout=75.0, head_timeout=30.0)
SERVERS = ("emulator", "hypercorn")


class Served:
    """A running server: its port, and `drain()` to start a graceful shutdown."""

    def __init__(self, port: int, drain: Callable[[], None]) -> None:
        self.port = port
        self.drain = drain

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def serving(
    app: App,
    server: str = "emulator",
    families: FamilyMap | None = None,
    websocket_limits: WebSocketLimits | None = None,
    limits: ServerLimits = LIMITS,
) -> AsyncIterator[Served]:
    """Serve `app` until the block ends (`limits`: the emulator's own server only)."""
    if server == "hypercorn":
        async with _hypercorn(app) as served:
            yield served
        return
    h1 = H1Server(app, limits, families or FamilyMap())
    h2 = H2Server(app, limits, families or FamilyMap())
    if websocket_limits is not None:
        h1.websocket_limits = websocket_limits

    async def handler(stream: trio.SocketStream) -> None:
        preface = await h1.serve_connection(stream, scheme="http", sniff_h2=True)
        if preface is not None:
            await h2.serve_connection(stream, scheme="http", initial=preface)

    def drain() -> None:
        h1.drain()
        h2.drain()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        nursery.start_soon(h1.expire_connections)
        nursery.start_soon(h1.watch_disconnects)
        nursery.start_soon(h2.expire_connections)
        yield Served(listeners[0].socket.getsockname()[1], drain)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _hypercorn(app: App) -> AsyncIterator[Served]:
    hypercorn_compat.apply()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 2.0
    stop = trio.Event()

    async def lifespan_aware(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn_serve, lifespan_aware, config, shutdown_trigger=stop.wait)
        )
        yield Served(int(binds[0].rsplit(":", 1)[1]), stop.set)
        nursery.cancel_scope.cancel()
