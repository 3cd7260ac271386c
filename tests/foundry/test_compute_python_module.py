"""The real `foundry-compute-modules` library (PyPI, unmodified) as module processes over HTTPS.

Each module runs as a subprocess in its own process group, with the emulator's CA and a token file
without a trailing newline, exactly as a container would. Nothing here sleeps: the module functions
block on FIFOs the test opens, and the test waits on the broker's state."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

from emulator.foundry.broker import Broker
from emulator.foundry.core.jobs import Job, JobState

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
APP = "ri.foundry.main.deployed-app.agent-loop"
JANE = {"Authorization": "Bearer local-token-jane"}

MODULE = """
import json
import os

from compute_modules.annotations import function


@function
def add(context, event):
    return event["x"] + event["y"]


@function(streaming=True)
def count(context, event):
    for number in range(event["n"]):
        yield {"item": number, "job": context["jobId"]}


@function(streaming=True)
def first_then_wait(context, event):
    yield {"item": 0}
    # Blocks until the test opens the FIFO for writing: the first item must be out by then.
    with open(event["fifo"]) as fifo:
        fifo.read()
    yield {"item": 1}


@function
def boom(context, event):
    raise ValueError("deliberate failure")


@function
def meet(context, event):
    # Opening a FIFO blocks until the other end is opened too: two jobs doing this at once
    # finish only if the module runs them at the same time.
    with open(event["fifo"], event["mode"]) as fifo:
        if event["mode"] == "w":
            fifo.write("hello")
            return "wrote"
        return fifo.read()


@function
def record(context, event):
    # O_APPEND writes of a short line are atomic, so all replicas can share one log.
    line = json.dumps({"job": context["jobId"], "replica": os.environ["REPLICA"]}) + "\\n"
    fd = os.open(os.environ["JOB_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return {"n": event["n"], "replica": os.environ["REPLICA"]}
"""


def seed(**limits: Any) -> dict[str, Any]:
    return {
        "tokens": {"local-token-jane": {"username": "jane"}},
        "foundry": {
            "users": [{"username": "jane"}],
            "compute_modules": {
                "runtimes": [
                    {"runtime_id": "agent-loop", "module_auth_token": "local-module-auth-token"}
                ],
                "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "agent-loop"}],
                "limits": {"poll_timeout": 5, **limits},
            },
        },
    }


Launch = Callable[..., Awaitable[trio.Process]]


@pytest.fixture
async def running(start_emulator: StartEmulator) -> Running:
    return await start_emulator(seed())


@pytest.fixture
async def launch(running: Running, tmp_path: Path) -> AsyncIterator[Launch]:
    """Start module processes; every one (and its worker pool) is killed when the test ends."""
    processes: list[trio.Process] = []
    script = tmp_path / "module.py"
    script.write_text(MODULE)

    sessions: list[dict[str, Any]] = []
    token_file = tmp_path / "module-auth-token"

    async def start(
        *, replica: str = "", concurrency: int = 1, extra: dict[str, str] | None = None
    ) -> trio.Process:
        if not sessions:
            # Once per test: re-creating the session later would end the jobs of running modules.
            async with running.client() as client:
                sessions.append(
                    (await client.post(RUNTIMES, json={"runtimeId": "agent-loop"})).json()
                )
            # No trailing newline: both libraries send the file's content as the header value.
            token_file.write_text(sessions[0]["moduleAuthToken"])
        session = sessions[0]
        env = {
            k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
        }
        env.update(session["environment"])
        if replica:
            base = session["replicaUriTemplate"].replace("{replica}", replica)
            env.update(
                GET_JOB_URI=base + "/job",
                POST_RESULT_URI=base + "/results",
                POST_SCHEMA_URI=base + "/schemas",
                RESTART_NOTIFICATION_URI=base + "/restart",
            )
        env.update(
            MODULE_AUTH_TOKEN=str(token_file),
            MAX_CONCURRENT_TASKS=str(concurrency),
            REPLICA=replica or "main",
            **(extra or {}),
        )
        log = (tmp_path / f"module-{len(processes)}.log").open("wb")
        process = await trio.lowlevel.open_process(
            [sys.executable, str(script)], env=env, stdout=log, stderr=log, start_new_session=True
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        kill_group(process)
        with trio.move_on_after(10):
            await process.wait()


def kill_group(process: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def broker_of(running: Running) -> Broker:
    broker: Broker = running.foundry.broker
    return broker


async def wait_for(running: Running, condition: Callable[[], bool], seconds: float = 30) -> None:
    with trio.fail_after(seconds):
        await broker_of(running).wait_until(condition)


def jobs(running: Running) -> list[Job]:
    return list(broker_of(running).jobs)


async def execute(client: httpx.AsyncClient, query_type: str, query: Any) -> httpx.Response:
    with trio.fail_after(30):
        return await client.post(
            EXECUTE,
            headers=JANE,
            json={"deployedAppRid": APP, "queryType": query_type, "query": query},
        )


def fifo(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    os.mkfifo(path)
    return path


async def write_fifo(path: Path, text: str = "go") -> None:
    def write() -> None:
        with open(path, "w") as handle:
            handle.write(text)

    await trio.to_thread.run_sync(write)


# -------------------------------------------------------------------------------------------------


async def test_plain_streaming_raising_and_unknown_functions(
    running: Running, launch: Launch
) -> None:
    await launch()
    async with running.client() as client:
        added = await execute(client, "add", {"x": 1, "y": 2})
        assert (added.status_code, added.content) == (200, b"3")
        counted = await execute(client, "count", {"n": 3})
        assert counted.status_code == 200
        items = counted.content.replace(b"}{", b"}\n{").splitlines()
        assert [json.loads(item)["item"] for item in items] == [0, 1, 2]
        assert counted.content.startswith(b'{"item": 0, "job": "foundry_job_'), (
            "bytes as the module wrote them"
        )
        boom = await execute(client, "boom", {})
        assert boom.status_code == 500
        assert boom.json()["error"] == "job_failed"
        assert boom.json()["error_description"].startswith("deliberate failure: Traceback")
        unknown = await execute(client, "nope", {})
        assert unknown.status_code == 500
        assert unknown.json() == {"error": "job_failed", "error_description": "Unknown query type"}
    states = [job.state for job in jobs(running)]
    assert states == [JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.FAILED, JobState.FAILED]


async def test_a_streamed_item_reaches_the_caller_while_the_function_still_runs(
    running: Running, launch: Launch, tmp_path: Path
) -> None:
    await launch()
    gate = fifo(tmp_path, "gate")
    call = {"deployedAppRid": APP, "queryType": "first_then_wait", "query": {"fifo": str(gate)}}
    async with (
        running.client() as client,
        client.stream("POST", EXECUTE, headers=JANE, json=call) as response,
    ):
        assert response.status_code == 200
        pieces = response.aiter_raw()
        with trio.fail_after(30):
            first = await pieces.__anext__()
        assert first == b'{"item": 0}'
        # Only now does the function get past its first item.
        await write_fifo(gate)
        with trio.fail_after(30):
            rest = b"".join([piece async for piece in pieces])
    assert first + rest == b'{"item": 0}{"item": 1}'


async def test_max_concurrent_tasks_runs_jobs_side_by_side(
    running: Running, launch: Launch, tmp_path: Path
) -> None:
    await launch(concurrency=2)
    meeting = fifo(tmp_path, "meeting")
    answers: dict[str, httpx.Response] = {}
    async with running.client() as client:

        async def side(mode: str) -> None:
            answers[mode] = await execute(client, "meet", {"fifo": str(meeting), "mode": mode})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "w")
            nursery.start_soon(side, "r")
    assert answers["w"].content == b'"wrote"'
    assert answers["r"].content == b'"hello"'


async def test_async_flow_and_schemas_through_inspect(running: Running, launch: Launch) -> None:
    await launch()
    async with running.client() as client:
        submitted = (
            await client.post(
                CONTOUR + "/deployed-apps/jobs",
                headers=JANE,
                json={"deployedAppRid": APP, "queryType": "add", "query": {"x": 20, "y": 22}},
            )
        ).json()
        job_id = submitted["id"]
        await wait_for(running, lambda: broker_of(running).jobs.get(job_id).state.finished)
        status = (await client.get(CONTOUR + f"/jobs/{job_id}/status", headers=JANE)).json()
        assert status["type"] == "succeeded"
        result = await client.put(
            CONTOUR + "/jobs/result/v2", headers=JANE, json={"jobHandle": submitted["jobHandle"]}
        )
        assert result.content == b"42"
        inspect = (await client.get(RUNTIMES + f"/agent-loop/jobs/{job_id}")).json()
    names = [schema["functionName"] for schema in inspect["schemas"]]
    assert names == ["add", "count", "first_then_wait", "boom", "meet", "record"]
    add = inspect["schemas"][0]["schema"]
    assert add["functionName"] == "add"
    assert add["output"]["type"] == "single"
    assert inspect["job"]["status"] == "succeeded"
    assert inspect["job"]["result"]["preview"] == "42"
    assert "local-module-auth-token" not in json.dumps(inspect)


async def test_a_restarted_module_fails_the_jobs_it_had_taken(
    running: Running, launch: Launch, tmp_path: Path
) -> None:
    first = await launch()
    gate = fifo(tmp_path, "never")
    answers: list[httpx.Response] = []
    async with running.client() as client:

        async def call() -> None:
            answers.append(await execute(client, "meet", {"fifo": str(gate), "mode": "r"}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await wait_for(running, lambda: any(j.state is JobState.RUNNING for j in jobs(running)))
            kill_group(first)
            await first.wait()
            await launch()
    assert answers[0].status_code == 500
    assert "restarted" in answers[0].json()["error_description"]
    [job] = jobs(running)
    assert job.state is JobState.FAILED
    # The new module keeps working.
    async with running.client() as client:
        assert (await execute(client, "add", {"x": 2, "y": 2})).content == b"4"


async def test_three_replicas_run_every_job_exactly_once(
    running: Running, launch: Launch, tmp_path: Path
) -> None:
    log = tmp_path / "jobs.log"
    for name in ("r1", "r2", "r3"):
        await launch(replica=name, extra={"JOB_LOG": str(log)})
    await wait_for(running, lambda: broker_of(running).polling("agent-loop") == 3)
    total = 300
    limit = trio.Semaphore(30)
    answers: dict[int, dict[str, Any]] = {}
    async with running.client(limits=httpx.Limits(max_connections=30)) as client:

        async def call(number: int) -> None:
            async with limit:
                response = await execute(client, "record", {"n": number})
            assert response.status_code == 200, response.text
            answers[number] = response.json()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for number in range(total):
                    nursery.start_soon(call, number)
    assert sorted(answers) == list(range(total))
    assert all(answer["n"] == number for number, answer in answers.items()), (
        "each caller got its own"
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    executed = [line["job"] for line in lines]
    assert len(executed) == total, "every job ran"
    assert len(set(executed)) == total, "every job ran exactly once"
    assert sorted(job.job_id for job in jobs(running)) == sorted(executed)
    by_replica = {
        name: sum(1 for line in lines if line["replica"] == name) for name in ("r1", "r2", "r3")
    }
    assert all(count > 0 for count in by_replica.values()), by_replica
    assert {job.replica for job in jobs(running)} == {"r1", "r2", "r3"}
