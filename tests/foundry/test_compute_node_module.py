"""The real npm `@palantir/compute-module` 0.2.7 (unmodified) as a Node process, HTTP and HTTPS:
`register`, `registerStreaming`, a thrown error, and its schema post.

The library is installed by the test command (`npm ci --prefix tests/node`, pinned by
tests/node/package.json and package-lock.json). Without it these tests fail, on purpose."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

from emulator.foundry.broker import Broker
from emulator.foundry.core.jobs import JobState

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
LIBRARY = NODE_DIR / "node_modules" / "@palantir" / "compute-module" / "package.json"
RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
EXECUTE = "/contour-backend-multiplexer/api/module-group-multiplexer/compute-modules/jobs/execute"
APP = "ri.foundry.main.deployed-app.agent-loop"
JANE = {"Authorization": "Bearer local-token-jane"}

SEED: dict[str, Any] = {
    "tokens": {"local-token-jane": {"username": "jane"}},
    "foundry": {
        "users": [{"username": "jane"}],
        "compute_modules": {
            "runtimes": [{"runtime_id": "agent-loop"}],
            "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "agent-loop"}],
            "limits": {"poll_timeout": 5},
        },
    },
}


def require_library() -> str:
    """The node binary; fails (never skips) with the fix when something is missing."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; the Node compute-module tests need Node.js 18 or later")
    if not LIBRARY.exists():
        pytest.fail(
            "tests/node/node_modules is missing: run `npm ci --prefix tests/node` "
            "(installs @palantir/compute-module 0.2.7 from package-lock.json)"
        )
    return node


@pytest.fixture
async def node_module(
    start_emulator: StartEmulator, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    node = require_library()
    tls: bool = request.param
    running = await start_emulator(SEED)
    async with running.client() as client:
        session = (await client.post(RUNTIMES, json={"runtimeId": "agent-loop"})).json()
    token_file = tmp_path / "module-auth-token"
    token_file.write_text(session["moduleAuthToken"])  # no trailing newline
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_ENV")
    }
    if tls:
        uris = session["environment"]
        env["DEFAULT_CA_PATH"] = session["caPath"]
    else:
        base = running.http_url + RUNTIMES + "/agent-loop"
        uris = {
            "GET_JOB_URI": base + "/job",
            "POST_RESULT_URI": base + "/results",
            "POST_SCHEMA_URI": base + "/schemas",
        }
    for name in ("GET_JOB_URI", "POST_RESULT_URI", "POST_SCHEMA_URI"):
        env[name] = uris[name]
    assert env["GET_JOB_URI"].startswith("https://" if tls else "http://")
    env["MODULE_AUTH_TOKEN"] = str(token_file)
    log = (tmp_path / "node.log").open("wb")
    process = await trio.lowlevel.open_process(
        [node, "module.js"], cwd=NODE_DIR, env=env, stdout=log, stderr=log, start_new_session=True
    )
    try:
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.move_on_after(10):
            await process.wait()
        assert process.returncode == -signal.SIGKILL, (
            "the Node module exited by itself (it crashes on any non-2xx answer):\n"
            + (tmp_path / "node.log").read_text(errors="replace")[-4000:]
        )


async def execute(client: httpx.AsyncClient, query_type: str, query: Any) -> httpx.Response:
    with trio.fail_after(30):
        return await client.post(
            EXECUTE,
            headers=JANE,
            json={"deployedAppRid": APP, "queryType": query_type, "query": query},
        )


@pytest.mark.parametrize("node_module", [False, True], ids=["http", "https"], indirect=True)
async def test_register_streaming_and_errors(node_module: Running) -> None:
    running = node_module
    async with running.client() as client:
        added = await execute(client, "add", {"x": 1, "y": 2})
        assert (added.status_code, added.content) == (200, b"3")
        counted = await execute(client, "count", {"n": 3})
        assert (counted.status_code, counted.content) == (200, b'{"item":0}{"item":1}{"item":2}')
        boom = await execute(client, "boom", {})
        assert boom.status_code == 500
        assert boom.json() == {
            "error": "job_failed",
            "error_description": "Error: deliberate failure",
        }
    broker: Broker = running.foundry.broker
    assert [job.state for job in broker.jobs] == [
        JobState.SUCCEEDED,
        JobState.SUCCEEDED,
        JobState.FAILED,
    ]
    [boom_job] = [job for job in broker.jobs if job.state is JobState.FAILED]
    assert boom_job.result is not None
    assert boom_job.result.body() == b'{"error":"Error","reason":"deliberate failure"}'
