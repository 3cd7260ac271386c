"""SIGTERM under load: a real `python -m emulator serve` with 100 runtimes long-polling and 1,000
synchronous executes waiting. Pollers get 204, waiting callers a 503 `shutting_down` in the
compute-module family, the process exits 0 within the grace period and logs no traceback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio
import yaml
from rawhttp import RawResponse, connect, parse_response, read_all, request_bytes

ROOT = Path(__file__).resolve().parents[2]
RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
EXECUTE = "/contour-backend-multiplexer/api/module-group-multiplexer/compute-modules/jobs/execute"
POLLED = 100
CALLERS = 1000
GRACE = 5.0


def seed() -> dict[str, Any]:
    runtimes = [{"runtime_id": f"rt-{i}", "module_auth_token": f"mt-{i}"} for i in range(POLLED)]
    apps = [
        {"deployed_app_rid": f"ri.foundry.main.deployed-app.app-{i}", "runtime_id": f"rt-{i}"}
        for i in range(POLLED)
    ]
    # The callers' jobs wait on a runtime nobody polls, so they are still waiting at SIGTERM.
    runtimes.append({"runtime_id": "busy", "module_auth_token": "mt-busy"})
    apps.append({"deployed_app_rid": "ri.foundry.main.deployed-app.busy", "runtime_id": "busy"})
    return {
        "tokens": {"tok": {"username": "jane", "scopes": []}},
        "foundry": {
            "users": [{"username": "jane"}],
            "compute_modules": {
                "runtimes": runtimes,
                "deployed_apps": apps,
                "limits": {
                    "poll_timeout": 120,
                    "execute_timeout": 120,
                    "job_timeout": 120,
                    "queue_depth": 5000,
                },
            },
        },
    }


async def wait_for_banner(stream: trio.abc.ReceiveStream) -> str:
    seen = b""
    with trio.fail_after(30):
        while b"Stop with" not in seen:
            chunk = await stream.receive_some()
            assert chunk, seen.decode(errors="replace")
            seen += chunk
    line = next(x for x in seen.decode().splitlines() if x.startswith("HTTP:"))
    return line.split()[1]


async def queued(url: str) -> int:
    stream, host = await connect(url)
    async with stream:
        await stream.send_all(request_bytes("GET", "/_emulate/state", host))
        state = parse_response(await read_all(stream)).json()
    return int(state["services"]["foundry"]["jobs"]["queued"])


async def test_sigterm_answers_pollers_and_callers_then_exits_zero(tmp_path: Path) -> None:
    seed_path = tmp_path / "seed.yaml"
    seed_path.write_text(yaml.safe_dump(seed()))
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [
                sys.executable, "-m", "emulator", "serve",
                "--port", "0", "--no-tls",
                "--seed", str(seed_path),
                "--state-dir", str(tmp_path),
                "--graceful-timeout", str(GRACE),
                "--log-level", "info",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        url = await wait_for_banner(process.stdout)
        polls: list[RawResponse] = []
        calls: list[RawResponse] = []
        sent = trio.Semaphore(0)

        async def one(
            method: str, path: str, headers: dict[str, str], body: bytes | None, into: list[Any]
        ) -> None:
            stream, host = await connect(url)
            async with stream:
                await stream.send_all(request_bytes(method, path, host, headers, body))
                sent.release()
                into.append(parse_response(await read_all(stream)))

        execute_body = json.dumps(
            {"deployedAppRid": "ri.foundry.main.deployed-app.busy", "queryType": "q", "query": {}}
        ).encode()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(POLLED):
                    headers = {"Module-Auth-Token": f"mt-{i}"}
                    nursery.start_soon(one, "GET", f"{RUNTIMES}/rt-{i}/job", headers, None, polls)
                for _ in range(POLLED):
                    await sent.acquire()
                for _ in range(CALLERS):
                    headers = {"Authorization": "Bearer tok", "Content-Type": "application/json"}
                    nursery.start_soon(one, "POST", EXECUTE, headers, execute_body, calls)
                for _ in range(CALLERS):
                    await sent.acquire()
                # Every caller's job is queued (so every caller is waiting on it).
                while await queued(url) < CALLERS:
                    pass
                assert not polls
                assert not calls
                signalled = trio.current_time()
                process.send_signal(signal.SIGTERM)
            answered = trio.current_time() - signalled
            code = await process.wait()
            exited = trio.current_time() - signalled
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    log = stderr_path.read_text()
    assert code == 0, log[-3000:]
    assert exited < GRACE, exited
    assert answered < GRACE, answered
    assert "Traceback" not in log, log[-3000:]
    assert len(polls) == POLLED
    assert {response.status for response in polls} == {204}
    assert len(calls) == CALLERS
    statuses = {response.status for response in calls}
    assert statuses == {503}, statuses
    for response in calls:
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"] == "shutting_down"
        assert set(response.json()) == {"error", "error_description"}
