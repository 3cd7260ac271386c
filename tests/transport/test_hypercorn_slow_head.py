"""Hypercorn mode: a request head that begins and never ends gets 408 at the head timeout
(issue 16, defect 11), as on the emulator's own server. Real sockets; the wait is a bounded
deadline on the server closing, never a sleep."""

from __future__ import annotations

from functools import partial
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

from emulator.transport import hypercorn_compat


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_head_that_never_ends_gets_408_before_the_keep_alive_timeout() -> None:
    hypercorn_compat.apply()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.keep_alive_timeout = 600
    config.emulator_head_timeout = 0.5  # type: ignore[attr-defined]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hypercorn.trio.serve, app, config))
            port = int(binds[0].rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            answer = b""
            while chunk := await stream.receive_some(65536):
                answer += chunk
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert answer.startswith(b"HTTP/1.1 408 ")
