"""The emulator's own HTTP/1.1 server (transport.h1), byte by byte over real sockets: keep-alive and
pipelining, the keep-alive and request-head timeouts, refused heads in the right error family,
100-continue, HEAD, an unread body dropped so the connection lives on, the HTTP/2 preface handed
to the HTTP/2 side, and shutdown closing idle connections at once.
"""

from __future__ import annotations

import json
from typing import Any

import h11
import httpx
import trio
from emulatorrun import Running, StartEmulator
from rawhttp import connect

JANE = {"Authorization": "Bearer tok"}
SEED: dict[str, Any] = {
    "tokens": {
        "tok": {
            "username": "jane",
            "scopes": ["api:ontologies-read", "api:connectivity-connection-write"],
        }
    },
    "foundry": {
        "users": [{"username": "jane"}],
        "oauth_clients": [{"client_id": "c", "client_secret": "s"}],
    },
}
ONTOLOGIES = "/api/v2/ontologies"
TOKEN = "/multipass/api/oauth2/token"


def head(method: str, path: str, host: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Reader:
    """Reads responses off one connection with an h11 client state machine."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        # The client side of h11 must have "sent" a request before it reads a response.
        self.informational: list[int] = []

    async def response(self, method: str = "GET") -> tuple[h11.Response, bytes]:
        self.h11.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        self.h11.send(h11.EndOfMessage())
        response: h11.Response | None = None
        body = b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.InformationalResponse):
                self.informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                return response, body
            else:
                raise AssertionError(f"unexpected {event!r}")


def header(response: h11.Response, name: bytes) -> bytes | None:
    return dict(response.headers).get(name)


async def closed_by_server(stream: trio.SocketStream) -> bytes:
    """Everything the server still sends, up to its end of the connection."""
    rest = b""
    while chunk := await stream.receive_some(65536):
        rest += chunk
    return rest


async def test_keep_alive_and_pipelined_requests_are_answered_in_order(emulator: Running) -> None:
    stream, host = await connect(emulator.http_url)
    async with stream:
        reader = Reader(stream)
        with trio.fail_after(10):
            await stream.send_all(head("GET", "/_emulate/health", host))
            first, body = await reader.response()
            assert first.status_code == 200
            assert json.loads(body)["status"] == "ok"
            # Three requests in one write: three answers, in order, on the same connection.
            await stream.send_all(
                head("GET", "/_emulate/health", host)
                + head("GET", "/no/such/route", host)
                + head("GET", "/_emulate/health", host)
            )
            statuses = [(await reader.response())[0].status_code for _ in range(3)]
    assert statuses == [200, 404, 200]


async def test_an_idle_connection_closes_after_the_keep_alive_timeout(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(SEED, tls_enabled=False, keep_alive_timeout=0.4)
    stream, host = await connect(running.http_url)
    async with stream:
        reader = Reader(stream)
        await stream.send_all(head("GET", "/_emulate/health", host))
        with trio.fail_after(10):
            response, _ = await reader.response()
            assert response.status_code == 200
            started = trio.current_time()
            assert await closed_by_server(stream) == b""
        assert trio.current_time() - started >= 0.4


async def test_a_trickled_head_gets_408_in_the_family_and_is_closed(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(SEED, tls_enabled=False, body_timeout=0.5)
    stream, host = await connect(running.http_url)
    async with stream:
        # The request line and part of the headers, then nothing.
        await stream.send_all(f"GET {ONTOLOGIES} HTTP/1.1\r\nHost: {host}\r\nX-A: 1".encode())
        with trio.fail_after(10):
            answer = await closed_by_server(stream)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:200]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    # /api/v2 is the Conjure family.
    assert body["errorName"] == "Default:RequestTimeout", body


async def test_a_head_over_the_limit_in_pieces_gets_431_and_a_garbage_line_400(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(SEED, tls_enabled=False, max_header_bytes=2048)
    stream, host = await connect(running.http_url)
    async with stream:
        await stream.send_all(f"GET {TOKEN} HTTP/1.1\r\nHost: {host}\r\n".encode())
        with trio.fail_after(10):
            for _ in range(10):
                await stream.send_all(b"X-Big: " + b"y" * 500 + b"\r\n")
            answer = await closed_by_server(stream)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    # The token path is in the OAuth family.
    assert set(json.loads(answer.partition(b"\r\n\r\n")[2])) == {"error", "error_description"}

    stream, host = await connect(running.http_url)
    async with stream:
        await stream.send_all(b"THIS IS NOT HTTP\r\n\r\n")
        with trio.fail_after(10):
            answer = await closed_by_server(stream)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    async with running.client() as client:
        assert (await client.get(ONTOLOGIES, headers=JANE)).status_code == 200


async def test_expect_100_continue_and_head(start_emulator: StartEmulator) -> None:
    running = await start_emulator(SEED, tls_enabled=False)
    form = b"grant_type=client_credentials&client_id=c&client_secret=s"
    stream, host = await connect(running.http_url)
    async with stream:
        reader = Reader(stream)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(form)),
            "Expect": "100-continue",
        }
        with trio.fail_after(10):
            await stream.send_all(head("POST", TOKEN, host, headers))
            # Nothing but the interim answer arrives before the body is sent.
            interim = await stream.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 "), interim
            await stream.send_all(form)
            reader.h11.receive_data(interim)
            response, body = await reader.response("POST")
        assert response.status_code == 200
        assert json.loads(body)["token_type"] == "Bearer"

        # HEAD: the GET's headers, its Content-Length included, and no body.
        with trio.fail_after(10):
            await stream.send_all(head("HEAD", ONTOLOGIES, host, JANE))
            response, body = await reader.response("HEAD")
            await stream.send_all(head("GET", ONTOLOGIES, host, JANE))
            _get_response, get_body = await reader.response()
        assert response.status_code == 200
        assert body == b""
        assert get_body
        assert header(response, b"content-length") == str(len(get_body)).encode()


async def test_an_unread_body_is_dropped_and_the_connection_serves_on(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(SEED, tls_enabled=False, max_body_bytes=4096)
    big = json.dumps({"padding": "x" * 100_000}).encode()
    stream, host = await connect(running.http_url)
    async with stream:
        reader = Reader(stream)
        headers = {**JANE, "Content-Type": "application/json", "Content-Length": str(len(big))}
        with trio.fail_after(10):
            await stream.send_all(head("POST", "/api/v2/connectivity/connections", host, headers))
            async with trio.open_nursery() as nursery:
                # The 413 is decided from the declared length; the body still arrives after it.
                nursery.start_soon(stream.send_all, big)
                response, _ = await reader.response("POST")
            assert response.status_code == 413
            await stream.send_all(head("GET", ONTOLOGIES, host, JANE))
            response, _ = await reader.response()
        assert response.status_code == 200


async def test_the_http2_preface_goes_to_the_http2_side(emulator: Running) -> None:
    async with httpx.AsyncClient(base_url=emulator.http_url, http1=False, http2=True) as client:
        response = await client.get("/_emulate/health")
    assert response.status_code == 200
    assert response.http_version == "HTTP/2"


async def test_shutdown_closes_idle_connections_at_once(start_emulator: StartEmulator) -> None:
    running = await start_emulator(SEED, tls_enabled=False, graceful_timeout=30)
    stream, host = await connect(running.http_url)
    async with stream:
        reader = Reader(stream)
        await stream.send_all(head("GET", "/_emulate/health", host))
        with trio.fail_after(10):
            await reader.response()
        running.shutdown.set()
        # Well within the 30 s grace period: an idle connection has nothing to wait for.
        with trio.fail_after(5):
            assert await closed_by_server(stream) == b""


async def test_bytes_sent_ahead_during_a_long_poll_are_bounded(
    start_emulator: StartEmulator,
) -> None:
    seed = {
        **SEED,
        "foundry": {
            **SEED["foundry"],
            "compute_modules": {
                "runtimes": [{"runtime_id": "r", "module_auth_token": "mod-tok"}],
                "limits": {"poll_timeout": 60},
            },
        },
    }
    running = await start_emulator(seed, tls_enabled=False, max_header_bytes=4096)
    broker = running.foundry.broker
    stream, host = await connect(running.http_url)
    async with stream:
        poll = head("GET", "/_emulate/foundry/compute-modules/runtimes/r/job", host,
                    {"Module-Auth-Token": "mod-tok"})  # fmt: skip
        await stream.send_all(poll)
        with trio.fail_after(10):
            await broker.wait_until(lambda: broker.polling("r") == 1)
            # A pipelined request that never ends, while the poll is parked: the server stops
            # buffering it and closes the connection instead.
            await stream.send_all(b"POST /x HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"p" * 8192)
            assert await closed_by_server(stream) == b""
            await broker.wait_until(lambda: broker.polling("r") == 0)
