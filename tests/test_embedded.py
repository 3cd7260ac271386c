"""The programmatic helpers for compute modules (`handle.foundry.create_runtime`, `.jobs()`), the
`computeModules` part of `/_emulate/state`, and `POST /_emulate/reset` answering waiters."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

from emulator.embedded import EmulatorHandle, run_in_thread
from emulator.foundry.broker import Broker

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
APP = "ri.foundry.main.deployed-app.agent-loop"
FRESH_APP = "ri.foundry.main.deployed-app.fresh"
JANE = {"Authorization": "Bearer local-token-jane"}
SEEDED_TOKEN = "local-module-auth-token-embedded"
SEED: dict[str, Any] = {
    "tokens": {"local-token-jane": {"username": "jane"}},
    "foundry": {
        "users": [{"username": "jane"}],
        "compute_modules": {
            "runtimes": [{"runtime_id": "agent-loop", "module_auth_token": SEEDED_TOKEN}],
            "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "agent-loop"}],
            "limits": {"poll_timeout": 120},
        },
    },
}
MODULE_VARIABLES = {
    "RUNTIME_HOST",
    "RUNTIME_PORT",
    "GET_JOB_URI",
    "POST_RESULT_URI",
    "POST_SCHEMA_URI",
    "RESTART_NOTIFICATION_URI",
    "MODULE_AUTH_TOKEN",
    "CONNECTIONS_TO_OTHER_PODS_CA_PATH",
    "DEFAULT_CA_PATH",
}


@pytest.fixture
async def running(start_emulator: StartEmulator) -> Running:
    return await start_emulator(SEED)


def handle_of(running: Running) -> EmulatorHandle:
    return EmulatorHandle(running.emulator, running.endpoints)


def broker_of(running: Running) -> Broker:
    broker: Broker = running.foundry.broker
    return broker


async def test_create_runtime_gives_an_environment_a_module_can_use(
    running: Running, tmp_path: Path
) -> None:
    foundry = handle_of(running).foundry
    token_file = tmp_path / "token"
    env = foundry.create_runtime("fresh", FRESH_APP, token_file=token_file)
    assert set(env) == MODULE_VARIABLES
    assert env["MODULE_AUTH_TOKEN"] == str(token_file)
    token = running.foundry.runtimes.get("fresh").token
    assert (await trio.Path(token_file).read_text()) == token, "no trailing newline"
    assert stat.S_IMODE((await trio.Path(token_file).stat()).st_mode) == 0o600
    assert env["RUNTIME_PORT"] == str(running.endpoints.https_port)
    # A module using exactly this environment (HTTPS, the CA, the token file) runs a job.
    module = {"Module-Auth-Token": (await trio.Path(env["MODULE_AUTH_TOKEN"]).read_text())}
    verify = ssl.create_default_context(cafile=env["CONNECTIONS_TO_OTHER_PODS_CA_PATH"])
    async with running.client() as client, httpx.AsyncClient(verify=verify) as module_client:
        submitted = await client.post(
            CONTOUR + "/deployed-apps/jobs",
            headers=JANE,
            json={"deployedAppRid": FRESH_APP, "queryType": "echo", "query": {"n": 1}},
        )
        job_id = submitted.json()["id"]
        with trio.fail_after(30):
            polled = await module_client.get(env["GET_JOB_URI"], headers=module)
        assert polled.json()["computeModuleJobV1"]["jobId"] == job_id
        posted = await module_client.post(
            env["POST_RESULT_URI"] + "/" + job_id, headers=module, content=b'{"n": 1}'
        )
        assert posted.status_code == 204
    [job] = foundry.jobs()
    assert job["jobId"] == job_id
    assert job["state"] == "succeeded"
    assert job["query"] == {"n": 1}
    assert job["resultPreview"] == '{"n": 1}'
    assert job["resultBytes"] == 8
    assert job["deployedAppRid"] == FRESH_APP
    # Again: a reset of the same runtime; rotate_token gives a new token in the file.
    again = foundry.create_runtime("fresh", rotate_token=True, token_file=token_file)
    assert again == env
    new_token = running.foundry.runtimes.get("fresh").token
    assert new_token != token
    assert (await trio.Path(token_file).read_text()) == new_token


async def test_create_runtime_without_a_path_writes_a_private_temporary_file(
    running: Running,
) -> None:
    env = handle_of(running).foundry.create_runtime("agent-loop")
    path = trio.Path(env["MODULE_AUTH_TOKEN"])
    try:
        assert (await path.read_text()) == SEEDED_TOKEN
        assert stat.S_IMODE((await path.stat()).st_mode) == 0o600
    finally:
        await path.unlink()


async def test_create_runtime_rejects_a_bad_runtime_id(running: Running, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runtimeId"):
        handle_of(running).foundry.create_runtime("bad/id", token_file=tmp_path / "t")
    assert not (await trio.Path(tmp_path / "t").exists())


def test_helpers_from_another_thread(state_dir: Path, tmp_path: Path) -> None:
    with run_in_thread(SEED, state_dir=state_dir) as emu:
        env = emu.foundry.create_runtime("agent-loop", token_file=tmp_path / "token")
        assert (tmp_path / "token").read_text() == SEEDED_TOKEN
        assert env["GET_JOB_URI"].startswith("https://")
        assert emu.foundry.jobs() == []
        state = emu.foundry.state()["computeModules"]
        assert [r["runtimeId"] for r in state["runtimes"]] == ["agent-loop"]


async def test_state_describes_the_job_plane_without_secrets(running: Running) -> None:
    async with running.client() as client:
        state = (await client.get("/_emulate/state")).json()["services"]["foundry"]
        compute = state["computeModules"]
        assert compute["runtimes"] == [
            {
                "runtimeId": "agent-loop",
                "displayName": None,
                "connected": False,
                "pollersWaiting": 0,
                "lastPollAt": None,
                "lastSchemaPostAt": None,
                "resets": 0,
                "onRestart": "fail",
                "schemas": [],
            }
        ]
        assert compute["deployedApps"] == [
            {
                "deployedAppRid": APP,
                "branch": "master",
                "runtimeId": "agent-loop",
                "displayName": compute["deployedApps"][0]["displayName"],
                "active": True,
                "queued": 0,
            }
        ]
        assert compute["jobs"]["recent"] == []
        # The existing keys stay.
        assert state["runtimes"] == 1
        assert state["deployedApps"] == 1
        module = {"Module-Auth-Token": SEEDED_TOKEN}
        schemas = [{"functionName": "add", "inputs": [], "output": {"type": "single"}}]
        await client.post(RUNTIMES + "/agent-loop/schemas", headers=module, json=schemas)
        for n in range(2):
            await client.post(
                CONTOUR + "/deployed-apps/jobs",
                headers=JANE,
                json={"deployedAppRid": APP, "queryType": "add", "query": {"n": n}},
            )
        with trio.fail_after(30):
            polled = await client.get(RUNTIMES + "/agent-loop/job", headers=module)
        assert polled.status_code == 200
        state_text = (await client.get("/_emulate/state")).text
    compute = json.loads(state_text)["services"]["foundry"]["computeModules"]
    [runtime] = compute["runtimes"]
    assert runtime["connected"] is True
    assert runtime["schemas"] == ["add"]
    assert isinstance(runtime["lastPollAt"], int)
    assert compute["deployedApps"][0]["queued"] == 1
    assert compute["jobs"]["counts"]["queued"] == 1
    assert compute["jobs"]["counts"]["running"] == 1
    recent = compute["jobs"]["recent"]
    assert [job["state"] for job in recent] == ["running", "queued"]
    assert recent[0]["startedAt"] is not None
    assert recent[1]["startedAt"] is None
    assert SEEDED_TOKEN not in state_text
    assert "local-token-jane" not in state_text


async def test_http_reset_answers_a_waiting_poller_and_caller(running: Running) -> None:
    broker = broker_of(running)
    answers: dict[str, httpx.Response] = {}
    async with running.client() as client:

        async def poll() -> None:
            answers["poll"] = await client.get(
                RUNTIMES + "/agent-loop/job", headers={"Module-Auth-Token": SEEDED_TOKEN}
            )

        async def call() -> None:
            # Another deployed app's runtime never polls: the caller waits until the reset.
            answers["call"] = await client.post(
                EXECUTE,
                headers=JANE,
                json={"deployedAppRid": FRESH_APP, "queryType": "add", "query": {}},
            )

        with trio.fail_after(30):
            async with running.client() as setup:
                await setup.post(RUNTIMES, json={"runtimeId": "idle", "deployedAppRid": FRESH_APP})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                nursery.start_soon(call)
                await broker.wait_until(
                    lambda: broker.polling("agent-loop") == 1 and len(broker.jobs) == 1
                )
                reset = await client.post("/_emulate/reset")
                assert reset.status_code == 200
    assert answers["poll"].status_code == 204
    assert answers["call"].status_code == 503
    assert answers["call"].json()["error"] == "emulator_reset"
    # Back to the seed: the runtime made at run time is gone, the job table is empty.
    assert set(running.foundry.runtimes.runtimes) == {"agent-loop"}
    assert len(broker_of(running).jobs) == 0


def test_the_embedded_api_restores_and_saves_the_state_file(
    state_dir: Path, tmp_path: Path
) -> None:
    """`state_file` works in-process as with `emulator serve`: saved at the end, laid over the
    seed at the next start."""
    state_file = tmp_path / "state.json"
    options: dict[str, Any] = {
        "services": ("foundry",),
        "state_dir": state_dir,
        "state_file": state_file,
        "tls_enabled": False,
    }
    with run_in_thread(None, **options) as first:
        token = first.foundry.mint_token("jane", ["api:admin-read"])
    assert state_file.is_file()
    with run_in_thread(None, **options) as second:
        answer = httpx.get(
            f"{second.http_url}/api/v2/admin/users/getCurrent",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["username"] == "jane"
