"""`foundry-emulator module run|env` as a user runs it: a subprocess against an in-process emulator.

The real Python library (`foundry-compute-modules`, over HTTPS with the emulator's CA) and the real
Node library (`@palantir/compute-module`, tests/node) each run a job end to end through contour
execute; stand-in modules (tiny Python scripts) report the environment and token file they got, so
the replica paths, signal forwarding, exit codes and token-file clean-up can be checked exactly.
Nothing sleeps: the test reads the stand-ins' output lines and waits on the broker's state.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

from emulator.foundry.broker import Broker
from emulator.foundry.core.jobs import JobState

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE_LIBRARY = NODE_DIR / "node_modules" / "@palantir" / "compute-module" / "package.json"
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

PYTHON_MODULE = """
from compute_modules.annotations import function


@function
def add(context, event):
    return event["x"] + event["y"]
"""

# Reports what it was given on one stdout line once its SIGTERM handler is in place, then waits
# for SIGTERM (signal.pause: no polling) and exits 7.
STAND_IN = """
import json, os, signal, stat, sys

def stop(signum, frame):
    sys.exit(7)

signal.signal(signal.SIGTERM, stop)
path = os.environ["MODULE_AUTH_TOKEN"]
with open(path, "rb") as handle:
    token = handle.read()
names = ["RUNTIME_HOST", "RUNTIME_PORT", "GET_JOB_URI", "POST_RESULT_URI", "POST_SCHEMA_URI",
         "RESTART_NOTIFICATION_URI", "MODULE_AUTH_TOKEN", "CONNECTIONS_TO_OTHER_PODS_CA_PATH",
         "DEFAULT_CA_PATH", "FOUNDRY_EMULATOR_REPLICA"]
report = {name: os.environ.get(name) for name in names}
report["token"] = token.decode()
report["mode"] = stat.S_IMODE(os.stat(path).st_mode)
report["pgid_is_own"] = os.getpgid(0) == os.getpid()
# One write of less than PIPE_BUF bytes: the replicas' lines never interleave.
os.write(1, (json.dumps(report) + "\\n").encode())
while True:
    signal.pause()
"""


@pytest.fixture
async def running(start_emulator: StartEmulator) -> Running:
    return await start_emulator(SEED)


def launcher_argv(running: Running, action: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "emulator",
        "module",
        action,
        "--runtime",
        "agent-loop",
        "--emulator",
        running.http_url,
        *args,
    ]


class Lines:
    """Lines of a subprocess's stdout, read as they come."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        with trio.fail_after(30):
            while b"\n" not in self.buffer:
                data = await self.stream.receive_some()
                assert data, "the process closed its output early: " + self.buffer.decode()
                self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


Launch = Callable[..., Awaitable[trio.Process]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start launchers; one still running when the test ends gets SIGTERM, then SIGKILL."""
    processes: list[trio.Process] = []

    async def start(
        argv: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> trio.Process:
        log = (tmp_path / f"launcher-{len(processes)}.log").open("wb")
        process = await trio.lowlevel.open_process(
            list(argv),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_ENV")
    }
    env.update(extra)
    return env


def broker_of(running: Running) -> Broker:
    broker: Broker = running.foundry.broker
    return broker


async def execute(client: httpx.AsyncClient, query_type: str, query: Any) -> httpx.Response:
    with trio.fail_after(60):
        return await client.post(
            EXECUTE,
            headers=JANE,
            json={"deployedAppRid": APP, "queryType": query_type, "query": query},
        )


async def stop(process: trio.Process) -> int:
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await process.wait()


# Real libraries ----------------------------------------------------------------------------------


async def test_module_run_with_the_python_library(
    running: Running, launch: Launch, tmp_path: Path
) -> None:
    script = tmp_path / "module.py"
    script.write_text(PYTHON_MODULE)
    process = await launch(launcher_argv(running, "run", "--", sys.executable, str(script)))
    async with running.client() as client:
        added = await execute(client, "add", {"x": 1, "y": 2})
    assert (added.status_code, added.content) == (200, b"3")
    [job] = list(broker_of(running).jobs)
    assert job.state is JobState.SUCCEEDED
    assert sorted(running.foundry.runtimes.get("agent-loop").schemas) == ["add"]
    # The module dies of the forwarded SIGTERM; the launcher reports it as a shell would.
    assert await stop(process) == 128 + signal.SIGTERM


async def test_module_run_with_the_node_library(running: Running, launch: Launch) -> None:
    if not NODE_LIBRARY.exists():
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node`")
    process = await launch(
        launcher_argv(running, "run", "--", "node", "module.js"), cwd=NODE_DIR, env=clean_env()
    )
    async with running.client() as client:
        added = await execute(client, "add", {"x": 20, "y": 22})
        counted = await execute(client, "count", {"n": 2})
    assert (added.status_code, added.content) == (200, b"42")
    assert (counted.status_code, counted.content) == (200, b'{"item":0}{"item":1}')
    assert await stop(process) == 128 + signal.SIGTERM


async def test_two_python_replicas_poll_on_their_own_paths(
    running: Running, launch: Launch, tmp_path: Path
) -> None:
    script = tmp_path / "module.py"
    script.write_text(PYTHON_MODULE)
    process = await launch(
        launcher_argv(running, "run", "--replicas", "2", "--", sys.executable, str(script))
    )
    broker = broker_of(running)
    # Each library process keeps one poll open: two at once means both replicas are up.
    with trio.fail_after(60):
        await broker.wait_until(lambda: broker.polling("agent-loop") == 2)
    async with running.client() as client:
        answers = [await execute(client, "add", {"x": n, "y": n}) for n in range(4)]
    assert [answer.content for answer in answers] == [b"0", b"2", b"4", b"6"]
    assert {job.replica for job in broker.jobs} <= {"replica-1", "replica-2"}
    assert await stop(process) == 128 + signal.SIGTERM


# Environment, token file, signals, exit codes ----------------------------------------------------


async def test_run_gives_each_replica_its_paths_and_a_private_token_file(
    running: Running, launch: Launch
) -> None:
    process = await launch(
        launcher_argv(running, "run", "--replicas", "2", "--", sys.executable, "-c", STAND_IN)
    )
    assert process.stdout is not None
    lines = Lines(process.stdout)
    reports = [json.loads(await lines.next()), json.loads(await lines.next())]
    token = running.foundry.runtimes.get("agent-loop").token
    replicas = sorted(report["FOUNDRY_EMULATOR_REPLICA"] for report in reports)
    assert replicas == ["replica-1", "replica-2"]
    for report in reports:
        replica = report["FOUNDRY_EMULATOR_REPLICA"]
        prefix = "/_emulate/foundry/compute-modules/runtimes/agent-loop/replicas/" + replica
        assert report["GET_JOB_URI"].endswith(prefix + "/job")
        assert report["POST_RESULT_URI"].endswith(prefix + "/results")
        assert report["POST_SCHEMA_URI"].endswith(prefix + "/schemas")
        assert report["RESTART_NOTIFICATION_URI"].endswith(prefix + "/restart")
        assert report["GET_JOB_URI"].startswith("https://")
        assert report["RUNTIME_PORT"] == str(running.endpoints.https_port)
        assert report["RUNTIME_HOST"] == running.endpoints.runtime_host
        assert report["CONNECTIONS_TO_OTHER_PODS_CA_PATH"] == str(running.ca_path)
        assert report["DEFAULT_CA_PATH"] == str(running.ca_path)
        assert report["token"] == token, "exactly the token: no trailing newline"
        assert report["mode"] == 0o600
        assert report["pgid_is_own"]
    token_file = Path(reports[0]["MODULE_AUTH_TOKEN"])
    assert reports[1]["MODULE_AUTH_TOKEN"] == str(token_file)
    assert await trio.Path(token_file).exists()
    # SIGTERM reaches both stand-ins, which exit 7; the launcher passes 7 on and removes the file.
    assert await stop(process) == 7
    assert not await trio.Path(token_file).exists()


async def test_run_passes_on_the_exit_code_of_a_module_that_ends(
    running: Running, launch: Launch
) -> None:
    process = await launch(
        launcher_argv(running, "run", "--", sys.executable, "-c", "raise SystemExit(3)")
    )
    with trio.fail_after(30):
        assert await process.wait() == 3


async def test_run_without_a_command_is_a_one_line_error(running: Running) -> None:
    result = await trio.run_process(
        launcher_argv(running, "run"), capture_stdout=True, capture_stderr=True, check=False
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip().splitlines() == [
        "emulator: error: give the module command after --, e.g. -- python app.py"
    ]


# module env --------------------------------------------------------------------------------------


async def module_env(running: Running, style: str, token_file: Path) -> tuple[str, str]:
    result = await trio.run_process(
        launcher_argv(running, "env", "--format", style, "--token-file", str(token_file)),
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode(), result.stderr.decode()


EXPECTED_NAMES = [
    "RUNTIME_HOST",
    "RUNTIME_PORT",
    "GET_JOB_URI",
    "POST_RESULT_URI",
    "POST_SCHEMA_URI",
    "RESTART_NOTIFICATION_URI",
    "MODULE_AUTH_TOKEN",
    "CONNECTIONS_TO_OTHER_PODS_CA_PATH",
    "DEFAULT_CA_PATH",
]


async def test_env_shell_format_can_be_sourced(running: Running, tmp_path: Path) -> None:
    token_file = tmp_path / "with space" / "token"
    out, err = await module_env(running, "shell", token_file)
    assert err.strip() == f"# token file: {token_file}"
    assert all(line.startswith("export ") for line in out.splitlines())
    printed = await trio.run_process(
        ["bash", "-c", out + 'printf "%s\\n" "$MODULE_AUTH_TOKEN" "$GET_JOB_URI"'],
        capture_stdout=True,
    )
    lines = printed.stdout.decode().splitlines()
    assert lines[0] == str(token_file)
    assert lines[1].endswith("/_emulate/foundry/compute-modules/runtimes/agent-loop/job")
    assert token_file.read_bytes() == running.foundry.runtimes.get("agent-loop").token.encode()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


async def test_env_dotenv_and_docker_formats(running: Running, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    dotenv, _ = await module_env(running, "dotenv", token_file)
    docker, _ = await module_env(running, "docker", token_file)
    parsed_dotenv = {}
    for line in dotenv.splitlines():
        name, value = line.split("=", 1)
        parsed_dotenv[name] = json.loads(value)
    parsed_docker = dict(line.split("=", 1) for line in docker.splitlines())
    assert list(parsed_dotenv) == EXPECTED_NAMES
    assert parsed_docker == parsed_dotenv
    assert parsed_docker["MODULE_AUTH_TOKEN"] == str(token_file)
    assert parsed_docker["RUNTIME_PORT"] == str(running.endpoints.https_port)
    assert not token_file.read_bytes().endswith(b"\n")
    # No secret in the output itself: only the path of the token file.
    assert running.foundry.runtimes.get("agent-loop").token not in dotenv + docker


async def test_env_with_no_emulator_running_says_how_to_start_one(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on that port once the probe is closed.
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "emulator",
            "module",
            "env",
            "--runtime",
            "agent-loop",
            "--emulator",
            f"http://127.0.0.1:{port}",
            "--token-file",
            str(tmp_path / "token"),
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == b""
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"emulator: error: no emulator answers at http://127.0.0.1:{port}")
    assert "foundry-emulator serve" in line
    assert not (tmp_path / "token").exists()


async def test_env_reports_the_emulators_refusal(running: Running) -> None:
    result = await trio.run_process(
        [
            sys.executable,
            "-m",
            "emulator",
            "module",
            "env",
            "--runtime",
            "bad/id",
            "--emulator",
            running.http_url,
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("emulator: error: the emulator refused the runtime session: 400")


async def test_clean_removes_the_token_files_env_left_in_the_state_dir(
    running: Running, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    environment = {**os.environ, "EMULATOR_STATE_DIR": str(state_dir)}
    written = await trio.run_process(
        launcher_argv(running, "env"), env=environment, capture_stdout=True, capture_stderr=True
    )
    token_file = state_dir / "module-token-agent-loop"
    assert written.stderr.decode().strip() == f"# token file: {token_file}"
    assert token_file.is_file()
    mine = state_dir / "keep-me"
    mine.write_text("not a token file")
    cleaned = await trio.run_process(
        [sys.executable, "-m", "emulator", "module", "clean"],
        env=environment,
        capture_stdout=True,
    )
    assert cleaned.stdout.decode().strip() == f"removed 1 token file(s) from {state_dir}"
    assert not token_file.exists()
    assert mine.exists()
