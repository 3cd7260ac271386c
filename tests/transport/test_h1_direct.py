"""The `DirectBody` the emulator's HTTP/1.1 server offers a streaming response over plain TCP
(`emulator.web.rawasgi.DIRECT_EXTENSION`): pieces written without a task switch arrive in
order and chunk-framed; bytes the socket does not take are owed, refused until flushed, and
go out before anything written later; a client that does not read is cut off by the send
timeout, so a flush never hangs; and a connection that is not a plain socket offers none.
"""

from __future__ import annotations

from typing import Any

import h11
import httpx
import trio
import trio.testing
from asgiserving import LIMITS, serving

from emulator.platform.errors import FamilyMap
from emulator.transport.h1 import H1Server
from emulator.transport.httpcommon import ServerLimits
from emulator.web.rawasgi import DIRECT_EXTENSION, DirectBody

START = {"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"stream")]}
# Big enough that a socket nobody reads from stops taking it.
PIECE = b"z" * 65536


def body(data: bytes, more: bool = True) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


class StreamingApp:
    """Sends a first piece the usual way, then hands its `DirectBody` to `play`."""

    def __init__(self, play: Any) -> None:
        self.play = play
        self.offered: list[bool] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        direct: DirectBody | None = scope["extensions"].get(DIRECT_EXTENSION)
        self.offered.append(direct is not None)
        await send(START)
        await send(body(b"first;"))
        if direct is not None:
            await self.play(direct)
        await send(body(b"last;", more=False))


async def test_direct_pieces_arrive_in_order_between_the_usual_sends() -> None:
    taken: list[bool] = []

    async def play(direct: DirectBody) -> None:
        for n in range(200):
            taken.append(direct.send_nowait(f"piece {n};".encode()))
        taken.append(direct.send_nowait(b""))  # nothing to take

    app = StreamingApp(play)
    async with serving(app) as served, httpx.AsyncClient() as client:
        response = await client.get(served.url + "/")
    assert app.offered == [True]
    assert response.headers["transfer-encoding"] == "chunked"
    pieces = "".join(f"piece {n};" for n in range(200))
    assert response.text == f"first;{pieces}last;"
    assert taken == [True] * 200 + [False]


async def test_owed_bytes_are_refused_until_flushed_and_go_out_first() -> None:
    sent: list[bytes] = []
    owing = trio.Event()

    async def play(direct: DirectBody) -> None:
        n = 0
        # The client does not read yet: the socket fills up and the rest is owed.
        while not direct.owed:
            piece = b"%08d" % n + PIECE
            assert direct.send_nowait(piece)
            sent.append(piece)
            n += 1
        assert not direct.send_nowait(b"refused while owed")
        owing.set()
        await direct.flush()
        assert not direct.owed
        after = b"after the flush;"
        assert direct.send_nowait(after)
        sent.append(after)

    async with serving(StreamingApp(play)) as served:
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        client = h11.Connection(h11.CLIENT)
        request = h11.Request(method="GET", target="/", headers=[("host", "x")])
        await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
        with trio.fail_after(30):
            await owing.wait()
            received = b""
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(1 << 20))
                elif isinstance(event, h11.Data):
                    received += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
        await stream.aclose()
    assert len(sent) > 2
    assert received == b"first;" + b"".join(sent) + b"last;"


async def test_a_client_that_does_not_read_is_cut_off_and_the_flush_returns() -> None:
    outcome: list[bool] = []
    flushed = trio.Event()

    async def play(direct: DirectBody) -> None:
        while direct.send_nowait(PIECE) and not direct.owed:
            pass
        with trio.fail_after(30):
            await direct.flush()
        # The connection is given up: nothing more is taken.
        outcome.append(direct.send_nowait(b"x"))
        flushed.set()

    quick = ServerLimits(
        max_header_bytes=LIMITS.max_header_bytes,
        keep_alive_timeout=LIMITS.keep_alive_timeout,
        head_timeout=LIMITS.head_timeout,
        send_timeout=0.2,
    )
    async with serving(StreamingApp(play), limits=quick) as served:
        stream = await trio.open_tcp_stream("127.0.0.1", served.port)
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(30):
            await flushed.wait()  # not a byte read meanwhile
            # The server shuts the connection down: reading drains what it had sent, then ends.
            try:
                while await stream.receive_some(1 << 20):
                    pass
            except trio.BrokenResourceError:
                pass  # a reset instead of an orderly end
        await stream.aclose()
    assert outcome == [False]


async def test_a_stream_that_is_not_a_plain_socket_gets_no_direct_body() -> None:
    async def play(direct: DirectBody) -> None:
        raise AssertionError("not offered")

    app = StreamingApp(play)
    server = H1Server(app, LIMITS, FamilyMap())
    ours, theirs = trio.testing.memory_stream_pair()
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target="/", headers=[("host", "x"), ("connection", "close")]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: server.serve_connection(theirs, scheme="https"))
        await ours.send_all(client.send(request) + client.send(h11.EndOfMessage()))
        received = b""
        with trio.fail_after(30):
            while not isinstance(event := client.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    client.receive_data(await ours.receive_some(65536))
                elif isinstance(event, h11.Data):
                    received += event.data
    assert app.offered == [False]
    assert received == b"first;last;"
