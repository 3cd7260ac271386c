"""The compute-module job plane over real HTTP/1.1 and HTTP/2 (h2c), with httpx and raw h11/h2
clients: every error path, the long poll (timeout, cancellation), callers that disconnect, result
conflicts, queue-full, expiry, token isolation, streaming and the async flow."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

from emulator.foundry.broker import Broker
from emulator.foundry.core.jobs import FailureKind, Job, JobState

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
RUNTIME = RUNTIMES + "/agent-loop"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
SUBMIT = CONTOUR + "/deployed-apps/jobs"
RESULT = CONTOUR + "/jobs/result/v2"
APP = "ri.foundry.main.deployed-app.agent-loop"
JANE = {"Authorization": "Bearer local-token-jane"}
BOB = {"Authorization": "Bearer local-token-bob"}
MODULE = {"Module-Auth-Token": "local-module-auth-token"}
OTHER_MODULE = {"Module-Auth-Token": "other-module-token"}
CALL = {"deployedAppRid": APP, "queryType": "add", "query": {"x": 1}}
PROTOCOLS = pytest.mark.parametrize("http2", [False, True], ids=["h11", "h2"])


def seed(**limits: Any) -> dict[str, Any]:
    return {
        "tokens": {
            "local-token-jane": {"username": "jane"},
            "local-token-bob": {"username": "bob"},
        },
        "foundry": {
            "users": [{"username": "jane"}, {"username": "bob"}],
            "compute_modules": {
                "runtimes": [
                    {"runtime_id": "agent-loop", "module_auth_token": "local-module-auth-token"},
                    {"runtime_id": "other", "module_auth_token": "other-module-token"},
                ],
                "deployed_apps": [
                    {"deployed_app_rid": APP, "runtime_id": "agent-loop"},
                    {
                        "deployed_app_rid": "ri.foundry.main.deployed-app.other",
                        "runtime_id": "other",
                    },
                ],
                "limits": limits,
            },
        },
    }


@pytest.fixture(params=["emulator", "hypercorn"])
async def running(start_emulator: StartEmulator, request: pytest.FixtureRequest) -> Running:
    # Both HTTP servers (Settings.http_server) carry the job plane the same way.
    return await start_emulator(seed(poll_timeout=30), http_server=request.param)


def broker_of(running: Running) -> Broker:
    broker: Broker = running.foundry.broker
    return broker


def only_job(running: Running) -> Job:
    jobs = list(broker_of(running).jobs)
    assert len(jobs) == 1
    return jobs[0]


async def wait_for(running: Running, condition: Callable[[], bool]) -> None:
    with trio.fail_after(10):
        await broker_of(running).wait_until(condition)


async def take_job(
    client: httpx.AsyncClient, headers: dict[str, str] = MODULE, path: str = RUNTIME + "/job"
) -> dict[str, Any]:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["computeModuleJobV1"]
    return job


async def submit_async(client: httpx.AsyncClient, headers: dict[str, str] = JANE) -> dict[str, Any]:
    response = await client.post(SUBMIT, headers=headers, json=CALL)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# Raw HTTP/1.1 and HTTP/2 clients, for disconnects (httpx over h2 sends no RST_STREAM) ------------


async def raw_h11(
    running: Running, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> trio.SocketStream:
    url = urlsplit(running.http_url)
    stream = await trio.open_tcp_stream(url.hostname or "127.0.0.1", url.port or 80)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return stream


class RawH2:
    """Just enough of an HTTP/2 client to open streams and reset them."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))

    @classmethod
    async def connect(cls, running: Running) -> RawH2:
        url = urlsplit(running.http_url)
        client = cls(await trio.open_tcp_stream(url.hostname or "127.0.0.1", url.port or 80))
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        await self.stream.send_all(self.conn.data_to_send())

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        head = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", "localhost"),
        ]
        head += [(name.lower(), value) for name, value in headers.items()]
        self.conn.send_headers(stream_id, head, end_stream=not body)
        if body:
            self.conn.send_data(stream_id, body, end_stream=True)
        await self.flush()
        return stream_id

    async def reset(self, stream_id: int) -> None:
        self.conn.reset_stream(stream_id)
        await self.flush()

    async def response(self, stream_id: int) -> tuple[int, bytes]:
        status, body = 0, b""
        while True:
            data = await self.stream.receive_some(65536)
            assert data, "connection closed"
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    if event.stream_id == stream_id:
                        body += event.data
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    await self.flush()
                    return status, body
            await self.flush()


# Runtime sessions ---------------------------------------------------------------------------------


async def test_runtime_session_gives_a_module_everything_it_needs(running: Running) -> None:
    async with running.client() as client:
        response = await client.post(RUNTIMES, json={"runtimeId": "agent-loop"})
    assert response.status_code == 200
    body = response.json()
    port = running.endpoints.https_port
    assert body["moduleAuthToken"] == "local-module-auth-token"
    assert body["created"] is False
    env = body["environment"]
    assert env["RUNTIME_HOST"] == "localhost"
    assert env["RUNTIME_PORT"] == str(port)
    base = f"https://localhost:{port}{RUNTIME}"
    assert env["GET_JOB_URI"] == body["getJobUri"] == base + "/job"
    assert env["POST_RESULT_URI"] == base + "/results"
    assert env["POST_SCHEMA_URI"] == base + "/schemas"
    assert env["RESTART_NOTIFICATION_URI"] == base + "/restart"
    assert env["CONNECTIONS_TO_OTHER_PODS_CA_PATH"] == str(running.ca_path)
    assert body["deployedApps"] == [{"deployedAppRid": APP, "branch": "master"}]


async def test_a_new_runtime_gets_a_fresh_token_and_a_rotation_replaces_it(
    running: Running,
) -> None:
    async with running.client() as client:
        new = (
            await client.post(
                RUNTIMES,
                json={"runtimeId": "fresh", "deployedAppRid": "ri.foundry.main.deployed-app.fresh"},
            )
        ).json()
        assert new["created"] is True
        assert new["moduleAuthToken"].startswith("foundry_module_auth_")
        again = (await client.post(RUNTIMES, json={"runtimeId": "fresh"})).json()
        assert again["moduleAuthToken"] == new["moduleAuthToken"]
        assert again["deployedApps"] == [
            {"deployedAppRid": "ri.foundry.main.deployed-app.fresh", "branch": "master"}
        ]
        rotated = (
            await client.post(RUNTIMES, json={"runtimeId": "agent-loop", "rotateToken": True})
        ).json()
        assert rotated["moduleAuthToken"] != "local-module-auth-token"
        old = await client.get(RUNTIME + "/job", headers=MODULE)
        assert old.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"null",
        b"{",
        b'{"runtimeId": ""}',
        b'{"runtimeId": "a b"}',
        b'{"runtimeId": "x", "deployedAppRid": "nope"}',
        b"\xff",
    ],
)
async def test_bad_runtime_sessions_are_400(running: Running, body: bytes) -> None:
    async with running.client() as client:
        response = await client.post(RUNTIMES, content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# Module-Auth-Token --------------------------------------------------------------------------


@PROTOCOLS
@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("GET", RUNTIME + "/job", {}, 401, "missing_module_auth_token"),
        ("GET", RUNTIME + "/job", {"Module-Auth-Token": "wrong"}, 401, "invalid_module_auth_token"),
        ("GET", RUNTIME + "/job", OTHER_MODULE, 401, "invalid_module_auth_token"),
        ("GET", RUNTIMES + "/nope/job", MODULE, 404, "not_found"),
        ("POST", RUNTIME + "/results/x", OTHER_MODULE, 401, "invalid_module_auth_token"),
        ("POST", RUNTIME + "/results/unknown", MODULE, 404, "not_found"),
        ("POST", RUNTIME + "/schemas", OTHER_MODULE, 401, "invalid_module_auth_token"),
        ("POST", RUNTIME + "/restart", {}, 401, "missing_module_auth_token"),
        ("GET", RUNTIME + "/replicas/a/job", OTHER_MODULE, 401, "invalid_module_auth_token"),
        ("GET", RUNTIME + "/replicas/bad%20name/job", MODULE, 404, "not_found"),
    ],
)
async def test_runtime_routes_check_the_token(
    running: Running,
    http2: bool,
    method: str,
    path: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    async with running.client(http2=http2) as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.json()["error"] == code


async def test_a_token_of_one_runtime_never_works_for_another(running: Running) -> None:
    async with running.client() as client:
        job = (await submit_async(client))["id"]
        taken = await take_job(client)
        assert taken["jobId"] == job
        response = await client.post(
            RUNTIMES + "/other/results/" + job, headers=OTHER_MODULE, content=b"1"
        )
        assert response.status_code == 404
        response = await client.post(
            RUNTIME + "/results/" + job, headers=OTHER_MODULE, content=b"1"
        )
        assert response.status_code == 401


# The long poll ------------------------------------------------------------------------------


@PROTOCOLS
async def test_an_empty_poll_waits_for_the_poll_timeout_then_204(
    start_emulator: StartEmulator, http2: bool
) -> None:
    running = await start_emulator(seed(poll_timeout=0.2))
    async with running.client(http2=http2) as client:
        start = trio.current_time()
        response = await client.get(RUNTIME + "/job", headers=MODULE)
    assert response.status_code == 204
    assert response.content == b""
    assert trio.current_time() - start >= 0.2


@PROTOCOLS
async def test_a_parked_poll_gets_a_job_at_once(running: Running, http2: bool) -> None:
    got: list[dict[str, Any]] = []
    async with running.client(http2=http2) as client:

        async def poll() -> None:
            got.append(await take_job(client))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                await wait_for(running, lambda: broker_of(running).polling("agent-loop") == 1)
                submitted = await submit_async(client)
    assert got[0]["jobId"] == submitted["id"]
    assert got[0]["queryType"] == "add"
    assert got[0]["query"] == {"x": 1}


async def test_a_poll_that_goes_away_over_h11_takes_no_job(running: Running) -> None:
    stream = await raw_h11(running, "GET", RUNTIME + "/job", MODULE)
    await wait_for(running, lambda: broker_of(running).polling("agent-loop") == 1)
    await stream.aclose()
    await wait_for(running, lambda: broker_of(running).polling("agent-loop") == 0)
    async with running.client() as client:
        submitted = await submit_async(client)
        assert (await take_job(client))["jobId"] == submitted["id"]


async def test_a_poll_reset_over_h2_takes_no_job(running: Running) -> None:
    h2c = await RawH2.connect(running)
    stream_id = await h2c.request("GET", RUNTIME + "/job", MODULE)
    await wait_for(running, lambda: broker_of(running).polling("agent-loop") == 1)
    await h2c.reset(stream_id)
    await wait_for(running, lambda: broker_of(running).polling("agent-loop") == 0)
    async with running.client() as client:
        submitted = await submit_async(client)
        assert (await take_job(client))["jobId"] == submitted["id"]
    await h2c.stream.aclose()


async def test_a_poller_that_closes_after_reading_got_its_job_once(
    start_emulator: StartEmulator,
) -> None:
    # Like Node's axios agent: `Connection: close`, so the disconnect follows the answer at once.
    running = await start_emulator(seed(poll_timeout=0.3))
    async with running.client() as client:
        for _ in range(20):
            await submit_async(client)
            stream = await raw_h11(
                running, "GET", RUNTIME + "/job", {**MODULE, "Connection": "close"}
            )
            answer = b""
            with trio.fail_after(10):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            await stream.aclose()
        leftover = await client.get(RUNTIME + "/job", headers=MODULE)
    assert leftover.status_code == 204, "a delivered job was put back in the queue"
    assert [job.dispatch_count for job in broker_of(running).jobs] == [1] * 20


async def test_many_pollers_share_the_work(running: Running) -> None:
    seen: list[str] = []

    async def replica(name: str) -> None:
        async with running.client() as client:
            while True:
                response = await client.get(RUNTIME + f"/replicas/{name}/job", headers=MODULE)
                if response.status_code == 204:
                    return
                job = response.json()["computeModuleJobV1"]
                seen.append(job["jobId"])
                answer = json.dumps(job["query"]).encode()
                path = RUNTIME + f"/replicas/{name}/results/" + job["jobId"]
                assert (await client.post(path, headers=MODULE, content=answer)).status_code == 204

    async def call(client: httpx.AsyncClient, number: int) -> None:
        response = await client.post(EXECUTE, headers=JANE, json={**CALL, "query": {"n": number}})
        assert response.status_code == 200
        assert response.json() == {"n": number}

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(replica, name)
            limits = httpx.Limits(max_connections=60)
            async with running.client(limits=limits) as callers, trio.open_nursery() as calls:
                for number in range(60):
                    calls.start_soon(call, callers, number)
            # The replicas' last polls end with 204 when the broker closes.
            broker_of(running).close(FailureKind.SHUTDOWN)
    assert len(seen) == len(set(seen)) == 60


# Sync execute -------------------------------------------------------------------------------------


@PROTOCOLS
async def test_execute_returns_the_runtime_bytes_exactly(
    running: Running, http2: bool, nursery: trio.Nursery
) -> None:
    payload = b'{"step": 1}{"step": 2}\n\x00\xff raw'

    async def runtime() -> None:
        async with running.client(http2=http2) as client:
            job = await take_job(client)
            posted = await client.post(
                RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=payload
            )
            assert posted.status_code == 204
            assert posted.content == b""

    nursery.start_soon(runtime)
    async with running.client(http2=http2) as client:
        response = await client.post(EXECUTE, headers=JANE, json=CALL)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == payload
    assert response.headers["content-length"] == str(len(payload))


@PROTOCOLS
async def test_execute_streams_each_piece_as_the_runtime_sends_it(
    running: Running, http2: bool, nursery: trio.Nursery
) -> None:
    release = trio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b'{"step": 1}'
        await release.wait()
        yield b'{"step": 2}'

    async def runtime() -> None:
        async with running.client(http2=http2) as client:
            job = await take_job(client)
            posted = await client.post(
                RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=body()
            )
            assert posted.status_code == 204

    nursery.start_soon(runtime)
    async with (
        running.client(http2=http2) as client,
        client.stream("POST", EXECUTE, headers=JANE, json=CALL) as response,
    ):
        assert response.status_code == 200
        pieces = response.aiter_raw()
        with trio.fail_after(10):
            first = await pieces.__anext__()
        assert first == b'{"step": 1}', "the first item arrives while the runtime still works"
        release.set()
        rest = b"".join([piece async for piece in pieces])
    assert first + rest == b'{"step": 1}{"step": 2}'


@PROTOCOLS
@pytest.mark.parametrize(
    ("report", "message"),
    [
        (b'{"exception": "division by zero: Traceback ..."}', "division by zero: Traceback ..."),
        (b'{"error": "Error", "reason": "deliberate failure"}', "Error: deliberate failure"),
        (b'{"error": "Unknown query type"}', "Unknown query type"),
    ],
)
async def test_a_failure_report_reaches_the_caller_as_job_failed(
    running: Running, http2: bool, nursery: trio.Nursery, report: bytes, message: str
) -> None:
    async def runtime() -> None:
        async with running.client(http2=http2) as client:
            job = await take_job(client)
            assert (
                await client.post(
                    RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=report
                )
            ).status_code == 204

    nursery.start_soon(runtime)
    async with running.client(http2=http2) as client:
        response = await client.post(EXECUTE, headers=JANE, json=CALL)
        assert response.status_code == 500
        assert response.json() == {"error": "job_failed", "error_description": message}
        job = only_job(running)
        status = (await client.get(CONTOUR + f"/jobs/{job.job_id}/status", headers=JANE)).json()
        assert status["type"] == "failed"
        assert status["failed"]["message"] == message
        assert status["failed"]["exception"]["message"] == message
        kept = await client.put(RESULT, headers=JANE, json={"id": job.job_id})
        assert kept.status_code == 200
        assert kept.content == report


@PROTOCOLS
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "invalid_request"),
        (b"{", 400, "invalid_request"),
        (b"[]", 400, "invalid_request"),
        (b"\xff\xfe", 400, "invalid_request"),
        (b'{"queryType": "q"}', 400, "invalid_request"),
        (b'{"deployedAppRid": "ri.foundry.main.deployed-app.agent-loop"}', 400, "invalid_request"),
        (b'{"deployedAppRid": 1, "queryType": "q"}', 400, "invalid_request"),
        (
            b'{"deployedAppRid": "ri.foundry.main.deployed-app.unknown", "queryType": "q"}',
            404,
            "not_found",
        ),
        (
            json.dumps(
                {"deployedAppRid": APP, "deployedAppBranch": "dev", "queryType": "q"}
            ).encode(),
            404,
            "not_found",
        ),
    ],
)
async def test_bad_execute_requests(
    running: Running, http2: bool, body: bytes, status: int, code: str
) -> None:
    async with running.client(http2=http2) as client:
        sync = await client.post(EXECUTE, headers=JANE, content=body)
        asynchronous = await client.post(SUBMIT, headers=JANE, content=body)
    for response in (sync, asynchronous):
        assert response.status_code == status
        assert response.json()["error"] == code
    if code == "not_found" and b"unknown" in body:
        assert "ri.foundry.main.deployed-app.unknown" in sync.json()["error_description"]
    assert len(broker_of(running).jobs) == 0


@PROTOCOLS
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}]
)
async def test_contour_routes_need_a_bearer_token(
    running: Running, http2: bool, headers: dict[str, str]
) -> None:
    async with running.client(http2=http2) as client:
        responses = [
            await client.post(EXECUTE, headers=headers, json=CALL),
            await client.post(SUBMIT, headers=headers, json=CALL),
            await client.get(CONTOUR + "/jobs/x/status", headers=headers),
            await client.put(RESULT, headers=headers, json={"id": "x"}),
        ]
    for response in responses:
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_methods_on_raw_routes_are_405_in_the_family(running: Running) -> None:
    async with running.client() as client:
        response = await client.get(EXECUTE, headers=JANE)
        poll = await client.delete(RUNTIME + "/job", headers=MODULE)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"
    assert poll.status_code == 405
    assert poll.headers["allow"] == "GET"


async def test_odd_paths_never_break_the_server(running: Running) -> None:
    async with running.client() as client:
        encoded = await client.get(RUNTIMES + "/agent%2Floop/job", headers=MODULE)
        assert encoded.status_code == 404
        assert encoded.json()["error"] == "not_found"
        url = urlsplit(running.http_url)
        stream = await trio.open_tcp_stream(url.hostname or "", url.port or 0)
        await stream.send_all(
            b"GET "
            + RUNTIMES.encode()
            + b"/%ff%fe/job HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404")
        assert (await client.get("/_emulate/health")).status_code == 200


# Callers that leave or time out ----------------------------------------------------------------


async def test_a_caller_leaving_before_dispatch_over_h11_cancels_the_job(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(seed(poll_timeout=0.2))
    stream = await raw_h11(
        running,
        "POST",
        EXECUTE,
        {**JANE, "Content-Type": "application/json"},
        json.dumps(CALL).encode(),
    )
    await wait_for(running, lambda: len(broker_of(running).jobs) == 1)
    await stream.aclose()
    await wait_for(running, lambda: only_job(running).state is JobState.CANCELLED)
    async with running.client() as client:
        response = await client.get(RUNTIME + "/job", headers=MODULE)
        assert response.status_code == 204, "a cancelled job is never handed to a runtime"
        status = (
            await client.get(CONTOUR + f"/jobs/{only_job(running).job_id}/status", headers=JANE)
        ).json()
    assert status["type"] == "canceled"
    assert status["canceled"]["exception"]["errorType"]["name"] == "ComputeModule:CallerLeft"


async def test_a_caller_reset_over_h2_before_dispatch_cancels_the_job(running: Running) -> None:
    h2c = await RawH2.connect(running)
    stream_id = await h2c.request("POST", EXECUTE, JANE, json.dumps(CALL).encode())
    await wait_for(running, lambda: len(broker_of(running).jobs) == 1)
    await h2c.reset(stream_id)
    await wait_for(running, lambda: only_job(running).state is JobState.CANCELLED)
    await h2c.stream.aclose()


async def test_a_caller_leaving_after_dispatch_lets_the_job_finish(running: Running) -> None:
    stream = await raw_h11(running, "POST", EXECUTE, JANE, json.dumps(CALL).encode())
    async with running.client() as client:
        job = await take_job(client)
        broker = broker_of(running)
        await stream.aclose()
        await wait_for(running, lambda: not broker.has_caller(only_job(running)))
        posted = await client.post(
            RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=b"42"
        )
        assert posted.status_code == 204
        kept = await client.put(RESULT, headers=JANE, json={"id": job["jobId"]})
    assert kept.status_code == 200
    assert kept.content == b"42"
    assert only_job(running).state is JobState.SUCCEEDED


async def test_execute_timeout_before_dispatch_cancels(start_emulator: StartEmulator) -> None:
    running = await start_emulator(seed(execute_timeout=0.2))
    async with running.client() as client:
        response = await client.post(EXECUTE, headers=JANE, json=CALL)
    assert response.status_code == 504
    assert response.json()["error"] == "job_timeout"
    assert "cancelled" in response.json()["error_description"]
    assert only_job(running).state is JobState.CANCELLED


async def test_execute_timeout_after_dispatch_leaves_the_job_running(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(seed(execute_timeout=0.3))
    async with running.client() as client:
        async with trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def call() -> None:
                answers.append(await client.post(EXECUTE, headers=JANE, json=CALL))

            nursery.start_soon(call)
            job = await take_job(client)
        assert answers[0].status_code == 504
        assert job["jobId"] in answers[0].json()["error_description"]
        assert only_job(running).state is JobState.RUNNING
        await client.post(RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=b"late")
        kept = await client.put(RESULT, headers=JANE, json={"id": job["jobId"]})
    assert kept.content == b"late"


async def test_job_timeout_fails_the_job_and_answers_the_caller(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(seed(job_timeout=0.3))
    async with running.client() as client:
        async with trio.open_nursery() as nursery:
            answers: list[httpx.Response] = []

            async def call() -> None:
                answers.append(await client.post(EXECUTE, headers=JANE, json=CALL))

            nursery.start_soon(call)
            job = await take_job(client)
        assert answers[0].status_code == 504
        assert "job timeout" in answers[0].json()["error_description"]
        status = (await client.get(CONTOUR + f"/jobs/{job['jobId']}/status", headers=JANE)).json()
        assert status["type"] == "failed"
        # The module's late result is accepted (a 204 keeps both libraries alive) and dropped.
        late = await client.post(RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=b"1")
        assert late.status_code == 204
        fetch = await client.put(RESULT, headers=JANE, json={"id": job["jobId"]})
    assert fetch.status_code == 409
    assert fetch.json()["error"] == "job_failed"


# Results ---------------------------------------------------------------------------------------


@PROTOCOLS
async def test_the_first_complete_result_wins(running: Running, http2: bool) -> None:
    async with running.client(http2=http2) as client:
        submitted = await submit_async(client)
        job = await take_job(client)
        first = await client.post(
            RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=b"first"
        )
        second = await client.post(
            RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=b"second"
        )
        kept = await client.put(RESULT, headers=JANE, json={"jobHandle": submitted["jobHandle"]})
    assert first.status_code == 204
    assert second.status_code == 409
    assert second.json()["error"] == "result_exists"
    assert kept.content == b"first"


async def test_a_result_for_a_job_nobody_took_is_409(running: Running) -> None:
    async with running.client() as client:
        submitted = await submit_async(client)
        response = await client.post(
            RUNTIME + "/results/" + submitted["id"], headers=MODULE, content=b"x"
        )
    assert response.status_code == 409
    assert response.json()["error"] == "job_not_dispatched"


@PROTOCOLS
async def test_chunked_results_are_kept_byte_for_byte(running: Running, http2: bool) -> None:
    pieces = [bytes(range(256)) * 64, b"", b"\r\n0\r\n\r\n", b"tail"]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with running.client(http2=http2) as client:
        submitted = await submit_async(client)
        job = await take_job(client)
        posted = await client.post(
            RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=body()
        )
        kept = await client.put(RESULT, headers=JANE, json={"id": submitted["id"]})
    assert posted.status_code == 204
    assert kept.content == b"".join(pieces)


# The asynchronous flow ----------------------------------------------------------------------------


@PROTOCOLS
async def test_async_submit_status_and_result(running: Running, http2: bool) -> None:
    async with running.client(http2=http2) as client:
        submitted = await submit_async(client)
        job_id = submitted["id"]
        assert submitted["status"] == {
            "type": "queued",
            "queued": {"queueInfo": "NORMAL_OPERATION"},
        }
        assert json.loads(submitted["jobHandle"]) == {
            "type": "v1",
            "jobId": job_id,
            "nodeId": None,
            "moduleId": None,
            "persistJobResult": None,
        }
        not_ready = await client.put(RESULT, headers=JANE, json={"id": job_id})
        assert not_ready.status_code == 409
        assert not_ready.json()["error"] == "job_not_ready"
        await take_job(client)
        running_status = (await client.get(CONTOUR + f"/jobs/{job_id}/status", headers=JANE)).json()
        assert running_status["type"] == "running"
        timing = running_status["running"]["multiplexerJobTiming"]["queuedJob"]
        assert timing["queuedJobDispatchTimeMillis"] >= timing["multiplexerSubmitTimeMillis"]
        await client.post(RUNTIME + "/results/" + job_id, headers=MODULE, content=b'{"sum": 3}')
        done = (await client.get(CONTOUR + f"/jobs/{job_id}/status", headers=JANE)).json()
        assert done["type"] == "succeeded"
        assert done["succeeded"]["intermediateJobInfoList"] == []
        for _ in range(2):
            fetched = await client.put(
                RESULT, headers=JANE, json={"jobHandle": submitted["jobHandle"]}
            )
            assert fetched.content == b'{"sum": 3}'
            assert fetched.headers["content-type"] == "application/octet-stream"


async def test_other_principals_cannot_see_a_job(running: Running) -> None:
    async with running.client() as client:
        submitted = await submit_async(client)
        status = await client.get(CONTOUR + f"/jobs/{submitted['id']}/status", headers=BOB)
        result = await client.put(RESULT, headers=BOB, json={"id": submitted["id"]})
    assert status.status_code == 404
    assert result.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b'{"id": 5}',
        b'{"jobHandle": "{"}',
        b'{"jobHandle": "{\\"jobId\\": 1}"}',
        b"nope",
    ],
)
async def test_bad_result_requests(running: Running, body: bytes) -> None:
    async with running.client() as client:
        response = await client.put(RESULT, headers=JANE, content=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_unknown_jobs_are_404(running: Running) -> None:
    async with running.client() as client:
        status = await client.get(CONTOUR + "/jobs/foundry_job_nope/status", headers=JANE)
        result = await client.put(RESULT, headers=JANE, json={"id": "foundry_job_nope"})
    assert status.status_code == 404
    assert status.json()["error"] == "not_found"
    assert result.status_code == 404


# Limits ------------------------------------------------------------------------------------------


@PROTOCOLS
async def test_a_full_queue_answers_429_with_retry_after(
    start_emulator: StartEmulator, http2: bool
) -> None:
    running = await start_emulator(seed(queue_depth=2))
    async with running.client(http2=http2) as client:
        await submit_async(client)
        await submit_async(client)
        full = await client.post(SUBMIT, headers=JANE, json=CALL)
        sync = await client.post(EXECUTE, headers=JANE, json=CALL)
        other = await client.post(
            SUBMIT,
            headers=JANE,
            json={**CALL, "deployedAppRid": "ri.foundry.main.deployed-app.other"},
        )
    for response in (full, sync):
        assert response.status_code == 429
        assert response.json()["error"] == "queue_full"
        assert response.headers["retry-after"] == "1"
    assert other.status_code == 200


async def test_finished_jobs_expire_with_a_clear_404(start_emulator: StartEmulator) -> None:
    running = await start_emulator(seed(max_retained_jobs=1))
    async with running.client() as client:
        ids = []
        for _ in range(2):
            ids.append((await submit_async(client))["id"])
            job = await take_job(client)
            await client.post(RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=b"1")
        expired = await client.get(CONTOUR + f"/jobs/{ids[0]}/status", headers=JANE)
        kept = await client.get(CONTOUR + f"/jobs/{ids[1]}/status", headers=JANE)
    assert expired.status_code == 404
    assert expired.json()["error"] == "job_expired"
    assert "expired" in expired.json()["error_description"]
    assert kept.status_code == 200


async def test_a_large_result_is_streamed_but_not_kept(
    start_emulator: StartEmulator, nursery: trio.Nursery
) -> None:
    running = await start_emulator(seed(max_retained_result_bytes=1000))
    big = bytes(5000)

    async def runtime() -> None:
        async with running.client() as client:
            job = await take_job(client)
            await client.post(RUNTIME + "/results/" + job["jobId"], headers=MODULE, content=big)

    nursery.start_soon(runtime)
    async with running.client() as client:
        response = await client.post(EXECUTE, headers=JANE, json=CALL)
        assert response.content == big
        kept = await client.put(RESULT, headers=JANE, json={"id": only_job(running).job_id})
    assert kept.status_code == 409
    assert kept.json()["error"] == "result_not_retained"


# Schemas, restart, inspect ------------------------------------------------------------------


async def test_schemas_are_visible_through_inspect_and_the_token_never_is(running: Running) -> None:
    schema = [{"functionName": "add", "inputs": [], "output": {"type": "single"}}]
    async with running.client() as client:
        posted = await client.post(RUNTIME + "/schemas", headers=MODULE, json=schema)
        assert posted.status_code == 200
        assert posted.json() == {"functionNames": ["add"]}
        submitted = await submit_async(client)
        inspect = await client.get(RUNTIME + f"/jobs/{submitted['id']}")
    assert inspect.status_code == 200
    body = inspect.json()
    assert body["schemas"][0]["functionName"] == "add"
    assert body["schemas"][0]["schema"] == schema[0]
    assert body["job"]["status"] == "queued"
    assert body["job"]["queryType"] == "add"
    assert "local-module-auth-token" not in inspect.text


async def test_restart_fails_the_jobs_the_module_had_taken(running: Running) -> None:
    async with running.client() as client:
        submitted = await submit_async(client)
        await take_job(client)
        restart = await client.post(RUNTIME + "/restart", headers=MODULE)
        assert restart.status_code == 200
        assert restart.json() == [submitted["id"]]
        again = await client.post(RUNTIME + "/restart", headers=MODULE)
        assert again.json() == []
        status = (
            await client.get(CONTOUR + f"/jobs/{submitted['id']}/status", headers=JANE)
        ).json()
    assert status["type"] == "failed"
    assert "restarted" in status["failed"]["message"]


async def test_a_replica_restart_fails_only_that_replicas_jobs(running: Running) -> None:
    async with running.client() as client:
        mine = await submit_async(client)
        theirs = await submit_async(client)
        assert (await take_job(client, path=RUNTIME + "/replicas/a/job"))["jobId"] == mine["id"]
        assert (await take_job(client, path=RUNTIME + "/replicas/b/job"))["jobId"] == theirs["id"]
        restart = await client.post(RUNTIME + "/replicas/a/restart", headers=MODULE)
        assert restart.json() == [mine["id"]]
        done = await client.post(
            RUNTIME + "/replicas/b/results/" + theirs["id"], headers=MODULE, content=b"ok"
        )
        assert done.status_code == 204
    states = {job.job_id: job.state for job in broker_of(running).jobs}
    assert states == {mine["id"]: JobState.FAILED, theirs["id"]: JobState.SUCCEEDED}


async def test_resetting_the_session_ends_running_jobs_and_keeps_queued_ones(
    running: Running,
) -> None:
    async with running.client() as client:
        first = await submit_async(client)
        await take_job(client)
        second = await submit_async(client)
        session = (await client.post(RUNTIMES, json={"runtimeId": "agent-loop"})).json()
        assert session["endedJobs"] == [first["id"]]
        assert (await take_job(client))["jobId"] == second["id"]


# Reset and shutdown answer every waiter ----------------------------------------------------------


async def test_an_emulator_reset_answers_polls_and_callers(
    running: Running, nursery: trio.Nursery
) -> None:
    answers: dict[str, httpx.Response] = {}
    async with running.client() as client:

        async def poll() -> None:
            answers["poll"] = await client.get(RUNTIMES + "/other/job", headers=OTHER_MODULE)

        async def call() -> None:
            answers["call"] = await client.post(EXECUTE, headers=JANE, json=CALL)

        async with trio.open_nursery() as inner:
            inner.start_soon(poll)
            inner.start_soon(call)
            await wait_for(
                running,
                lambda: (
                    broker_of(running).polling("other") == 1 and len(broker_of(running).jobs) == 1
                ),
            )
            running.foundry.reset()
        assert answers["poll"].status_code == 204
        assert answers["call"].status_code == 503
        assert answers["call"].json()["error"] == "emulator_reset"
        # The seeded runtime and its token work as before.
        assert len(broker_of(running).jobs) == 0
        await submit_async(client)
        await take_job(client)


async def test_shutdown_answers_polls_and_callers(running: Running) -> None:
    answers: dict[str, httpx.Response] = {}
    async with running.client() as client:

        async def poll() -> None:
            answers["poll"] = await client.get(RUNTIME + "/job", headers=MODULE)

        async def call() -> None:
            answers["call"] = await client.post(
                EXECUTE,
                headers={**JANE},
                json={**CALL, "deployedAppRid": "ri.foundry.main.deployed-app.other"},
            )

        async with trio.open_nursery() as inner:
            inner.start_soon(poll)
            inner.start_soon(call)
            await wait_for(
                running,
                lambda: (
                    broker_of(running).polling("agent-loop") == 1
                    and len(broker_of(running).jobs) == 1
                ),
            )
            running.shutdown.set()
    assert answers["poll"].status_code == 204
    assert answers["call"].status_code == 503
    assert answers["call"].json()["error"] == "shutting_down"


async def test_results_streamed_to_a_sync_caller_are_kept_only_up_to_the_streamed_cap(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(seed(poll_timeout=30, max_retained_streamed_result_bytes=1024))
    piece = bytes(range(256)) * 4  # 1 KiB, not text
    first_bytes_seen = trio.Event()
    received = bytearray()

    async def upload() -> AsyncIterator[bytes]:
        yield piece
        await first_bytes_seen.wait()  # the caller is being streamed to now
        for _ in range(3):
            yield piece

    async with running.client() as caller, running.client() as module:
        async with trio.open_nursery() as nursery:

            async def execute() -> None:
                async with caller.stream("POST", EXECUTE, headers=JANE, json=CALL) as answer:
                    async for chunk in answer.aiter_raw():
                        received.extend(chunk)
                        first_bytes_seen.set()

            nursery.start_soon(execute)
            job = await take_job(module)
            posted = await module.post(
                f"{RUNTIME}/results/{job['jobId']}", headers=MODULE, content=upload()
            )
            assert posted.status_code == 204
        assert bytes(received) == piece * 4
        refused = await caller.put(RESULT, headers=JANE, json={"id": job["jobId"]})
        assert refused.status_code == 409
        assert refused.json()["error"] == "result_not_retained"

        # Nobody streams an async job's result: it is kept up to max_retained_result_bytes.
        handle = await submit_async(caller)
        queued = await take_job(module)
        assert queued["jobId"] == handle["id"]
        await module.post(f"{RUNTIME}/results/{queued['jobId']}", headers=MODULE, content=piece * 4)
        kept = await caller.put(RESULT, headers=JANE, json={"id": handle["id"]})
        assert kept.status_code == 200
        assert kept.content == piece * 4
