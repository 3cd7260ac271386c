"""The server: health over HTTP/1.1, h2c and HTTPS+h2 on both HTTP servers, error families for
framework errors."""

from __future__ import annotations

import httpx
import pytest
from emulatorrun import Running, StartEmulator


@pytest.mark.parametrize(
    ("tls", "http2", "expected"),
    [
        (False, False, "HTTP/1.1"),
        (False, True, "HTTP/2"),
        (True, False, "HTTP/1.1"),
        (True, True, "HTTP/2"),
    ],
)
@pytest.mark.parametrize("server", ["emulator", "hypercorn"])
async def test_health_on_every_listener_and_protocol(
    start_emulator: StartEmulator, server: str, tls: bool, http2: bool, expected: str
) -> None:
    emulator = await start_emulator(http_server=server)
    async with emulator.client(tls=tls, http2=http2) as client:
        response = await client.get("/_emulate/health")
    assert response.status_code == 200
    assert response.http_version == expected
    body = response.json()
    assert body["status"] == "ok"
    assert body["version"]
    assert body["uptimeSeconds"] >= 0


async def test_https_certificate_does_not_verify_without_the_ca(emulator: Running) -> None:
    async with httpx.AsyncClient(base_url=emulator.https_url, verify=True) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/_emulate/health")


@pytest.mark.parametrize(
    ("path", "family_key"),
    [
        ("/api/v2/nope", "errorName"),
        ("/multipass/api/oauth2/nope", "error"),
        ("/contour-backend-multiplexer/api/nope", "error"),
        ("/nothing-here", "error"),
    ],
)
async def test_unknown_routes_answer_json_in_their_family(
    emulator: Running, path: str, family_key: str
) -> None:
    async with emulator.client() as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert family_key in response.json()


async def test_wrong_method_is_405_json(emulator: Running) -> None:
    async with emulator.client() as client:
        response = await client.delete("/_emulate/health")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_conjure_errors_carry_every_field(emulator: Running) -> None:
    async with emulator.client() as client:
        body = (await client.get("/api/v2/does/not/exist")).json()
    assert set(body) == {
        "errorCode",
        "errorName",
        "errorDescription",
        "errorInstanceId",
        "parameters",
    }
    assert body["errorCode"] == "NOT_FOUND"


async def test_base_url_and_runtime_host_follow_the_listeners(emulator: Running) -> None:
    assert emulator.endpoints.base_url == emulator.http_url
    assert emulator.endpoints.runtime_host == "localhost"
    assert emulator.endpoints.https_port is not None


async def test_no_tls_listener(start_emulator: StartEmulator) -> None:
    running = await start_emulator(tls_enabled=False)
    assert running.endpoints.https_url is None
    async with running.client() as client:
        assert (await client.get("/_emulate/health")).status_code == 200


async def test_port_in_use_is_a_one_line_error(start_emulator: StartEmulator) -> None:
    from emulator.transport.server import ListenerError

    first = await start_emulator(tls_enabled=False)
    port = int(first.http_url.rsplit(":", 1)[1])
    with pytest.raises(ListenerError, match=f"port {port} on 127.0.0.1 is already in use"):
        await start_emulator(port=port, tls_enabled=False)
