"""Explicit limits, each tested: body size (413 in the route's family, declared or chunked),
header size, slow clients (408, nothing held), and result uploads that break off (malformed
chunked framing, a module that vanishes mid-upload) leave the job in a defined state: still
running, not uploading, and a later complete upload decides it.

The queue-depth 429 with Retry-After is in tests/foundry/test_compute_http.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator
from rawhttp import connect, parse_response, read_all, request_bytes

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
SUBMIT = CONTOUR + "/deployed-apps/jobs"
APP = "ri.foundry.main.deployed-app.limits"
JANE = {"Authorization": "Bearer tok"}
MODULE = {"Module-Auth-Token": "mod-tok"}
LIMIT = 4096
SEED: dict[str, Any] = {
    "tokens": {
        "tok": {
            "username": "jane",
            "scopes": ["api:connectivity-connection-write", "api:ontologies-read"],
        }
    },
    "foundry": {
        "users": [{"username": "jane"}],
        "oauth_clients": [{"client_id": "c", "client_secret": "s"}],
        "ontologies": [{"api_name": "o", "queries": [{"api_name": "q", "result": 1}]}],
        "compute_modules": {
            "runtimes": [{"runtime_id": "r", "module_auth_token": "mod-tok"}],
            "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "r"}],
            "limits": {"poll_timeout": 5, "execute_timeout": 30, "job_timeout": 30},
        },
    },
}
BIG_JSON = json.dumps({"padding": "x" * (LIMIT * 3)}).encode()
# (path, family style, expected error code, content type, headers)
ROUTES = [
    ("/multipass/api/oauth2/token", "oauth", "invalid_request", "application/x-www-form-urlencoded",
     {}),
    ("/api/v2/connectivity/connections", "conjure", None, "application/json", JANE),
    ("/api/v2/ontologies/o/queries/q/execute", "conjure", None, "application/json", JANE),
    (EXECUTE, "oauth", None, "application/json", JANE),
    (SUBMIT, "oauth", None, "application/json", JANE),
    (RUNTIMES, "oauth", None, "application/json", {}),
]  # fmt: skip


def assert_family(response: httpx.Response, style: str, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if style == "conjure":
        assert set(body) == {
            "errorCode", "errorName", "errorDescription", "errorInstanceId", "parameters"
        }  # fmt: skip
        expected = {413: "REQUEST_ENTITY_TOO_LARGE", 408: "TIMEOUT"}.get(status)
        if expected == "REQUEST_ENTITY_TOO_LARGE":
            assert body["errorCode"] == expected, body
    else:
        assert set(body) == {"error", "error_description"}, body


async def start(start_emulator: StartEmulator, **settings: Any) -> Running:
    settings.setdefault("max_body_bytes", LIMIT)
    return await start_emulator(SEED, tls_enabled=False, **settings)


async def jobs(client: httpx.AsyncClient) -> dict[str, int]:
    state = (await client.get("/_emulate/state")).json()
    counts: dict[str, int] = state["services"]["foundry"]["jobs"]
    return counts


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
async def test_a_body_over_max_body_bytes_is_413_in_the_routes_family(
    start_emulator: StartEmulator, chunked: bool
) -> None:
    running = await start(start_emulator)

    async def pieces() -> AsyncIterator[bytes]:
        for start_at in range(0, len(BIG_JSON), 1000):
            yield BIG_JSON[start_at : start_at + 1000]

    async with running.client() as client:
        for path, style, _, content_type, headers in ROUTES:
            with trio.fail_after(10):
                response = await client.post(
                    path,
                    content=pieces() if chunked else BIG_JSON,
                    headers={"Content-Type": content_type, **headers},
                )
            assert_family(response, style, 413)
            # The answer names the limit and, for the emulator-wide limit, what raises it.
            description = response.json().get("errorDescription") or response.json().get(
                "error_description"
            )
            assert f"The limit is {LIMIT:,} bytes" in description, description
            if not path.startswith("/multipass"):
                assert "EMULATOR_MAX_BODY_BYTES" in description, description
        # Nothing was queued by the refused executes and submits, and the server still serves.
        assert await jobs(client) == dict.fromkeys(
            ("queued", "running", "succeeded", "failed", "cancelled"), 0
        )
        assert (await client.get("/_emulate/health")).status_code == 200


async def test_a_header_over_max_header_bytes_is_refused_and_the_server_still_serves(
    start_emulator: StartEmulator,
) -> None:
    running = await start(start_emulator, max_header_bytes=2048)
    async with running.client() as client:
        with trio.fail_after(10):
            try:
                response: httpx.Response | None = await client.get(
                    "/api/v2/ontologies", headers={"X-Big": "y" * 200_000, **JANE}
                )
            except httpx.RemoteProtocolError:
                response = None  # the connection was closed: also a refusal
        assert response is None or response.status_code == 431, response
        ok = await client.get("/api/v2/ontologies", headers=JANE)
        assert ok.status_code == 200


@pytest.mark.parametrize(
    ("path", "key"), [("/api/v2/ontologies", "errorName"), (f"{CONTOUR}/jobs/x/status", "error")]
)
async def test_a_head_over_max_header_bytes_in_one_read_gets_431_in_the_family(
    start_emulator: StartEmulator, path: str, key: str
) -> None:
    # 8 KB arrives in one read, which Hypercorn's own limit lets through.
    running = await start(start_emulator, max_header_bytes=2048)
    async with running.client() as client:
        response = await client.get(path, headers={"X-Big": "y" * 8000, **JANE})
        assert response.status_code == 431
        body = response.json()
        assert key in body
        assert "y" * 100 not in response.text
        assert (await client.get("/api/v2/ontologies", headers=JANE)).status_code == 200


@pytest.mark.parametrize(("path", "style"), [(p, s) for p, s, *_ in ROUTES])
async def test_a_client_trickling_its_body_is_cut_after_body_timeout(
    start_emulator: StartEmulator, path: str, style: str
) -> None:
    """Headers promise 200 bytes, 10 arrive, then nothing: 408 within the body timeout."""
    running = await start(start_emulator, body_timeout=0.5)
    content_type = dict((p, c) for p, _, _, c, _ in ROUTES)[path]
    headers = dict((p, h) for p, *_, h in ROUTES)[path]
    stream, host = await connect(running.http_url)
    async with stream:
        head = request_bytes(
            "POST", path, host, {"Content-Type": content_type, **headers}, b"x" * 200
        )
        await stream.send_all(head[: len(head) - 190])  # the head and 10 bytes of the body
        started = trio.current_time()
        with trio.fail_after(10):
            data = await read_all(stream)
        waited = trio.current_time() - started
    response = parse_response(data)
    assert response.status == 408, data[:300]
    assert 0.4 <= waited < 5, waited
    body = response.json()
    assert set(body) >= ({"errorCode", "errorName"} if style == "conjure" else {"error"})
    async with running.client() as client:
        assert await jobs(client) == dict.fromkeys(
            ("queued", "running", "succeeded", "failed", "cancelled"), 0
        )


async def take_job(client: httpx.AsyncClient, *, sync: bool = False) -> str:
    if not sync:
        submitted = await client.post(
            SUBMIT, headers=JANE, json={"deployedAppRid": APP, "queryType": "q", "query": {}}
        )
        assert submitted.status_code == 200, submitted.text
    polled = await client.get(f"{RUNTIMES}/r/job", headers=MODULE)
    assert polled.status_code == 200, polled.text
    job_id: str = polled.json()["computeModuleJobV1"]["jobId"]
    return job_id


async def inspect(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = (await client.get(f"{RUNTIMES}/r/jobs/{job_id}")).json()["job"]
    return answer


async def raw_upload(running: Running, job_id: str, data: bytes, *, chunked: bool) -> bytes:
    """Send a result upload's head and `data`, then close the sending side; the answer."""
    stream, host = await connect(running.http_url)
    headers = {**MODULE, "Content-Type": "application/octet-stream"}
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
        head = request_bytes("POST", f"{RUNTIMES}/r/results/{job_id}", host, headers)
    else:
        head = request_bytes("POST", f"{RUNTIMES}/r/results/{job_id}", host, headers, b"")
        head = head.replace(b"Content-Length: 0", b"Content-Length: 1000")
    async with stream:
        await stream.send_all(head + data)
        await stream.send_eof()
        with trio.fail_after(10):
            return await read_all(stream)


async def assert_recovers(running: Running, client: httpx.AsyncClient, job_id: str) -> None:
    """The job is running and not uploading; a complete upload then decides it."""
    job = await inspect(client, job_id)
    assert job["status"] == "running", job
    assert job["uploading"] is False
    assert job["result"] is None
    done = await client.post(f"{RUNTIMES}/r/results/{job_id}", headers=MODULE, content=b"42")
    assert done.status_code == 204, done.text
    job = await inspect(client, job_id)
    assert job["status"] == "succeeded", job
    fetched = await client.put(f"{CONTOUR}/jobs/result/v2", headers=JANE, json={"id": job_id})
    assert fetched.content == b"42"


async def test_a_malformed_chunked_result_leaves_the_job_running(
    start_emulator: StartEmulator,
) -> None:
    running = await start(start_emulator)
    async with running.client() as client:
        job_id = await take_job(client)
        answer = await raw_upload(running, job_id, b"5\r\nhel", chunked=True)
        # Framing that is not hex, after a valid chunk.
        job_id2 = await take_job(client)
        answer2 = await raw_upload(running, job_id2, b"2\r\nhi\r\nzz\r\nnope", chunked=True)
        for data in (answer, answer2):
            assert data == b"" or parse_response(data).status in (400, 408), data[:300]
        await assert_recovers(running, client, job_id)
        await assert_recovers(running, client, job_id2)


async def test_a_module_vanishing_mid_upload_leaves_the_job_running(
    start_emulator: StartEmulator,
) -> None:
    running = await start(start_emulator)
    async with running.client() as client:
        job_id = await take_job(client)
        await raw_upload(running, job_id, b"partial", chunked=False)  # 7 of 1000 bytes
        await assert_recovers(running, client, job_id)


async def test_a_sync_caller_is_cut_when_the_upload_breaks_and_the_job_stays_defined(
    start_emulator: StartEmulator,
) -> None:
    """Bytes already streamed to a synchronous caller cannot be taken back: its answer is cut
    (no clean end of body); the job stays running until a complete upload or its job timeout."""
    running = await start(start_emulator)
    outcome: list[str] = []
    async with running.client() as client, running.client() as caller:

        async def execute() -> None:
            try:
                response = await caller.post(
                    EXECUTE, headers=JANE, json={"deployedAppRid": APP, "queryType": "q"}
                )
                outcome.append(f"complete {response.status_code} {response.content!r}")
            except httpx.HTTPError as error:
                outcome.append(f"cut {type(error).__name__}")

        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(execute)
                job_id = await take_job(client, sync=True)
                await raw_upload(running, job_id, b"partial", chunked=False)
        assert len(outcome) == 1
        assert outcome[0].startswith("cut"), outcome
        job = await inspect(client, job_id)
        assert job["status"] == "running", job
        assert job["uploading"] is False
