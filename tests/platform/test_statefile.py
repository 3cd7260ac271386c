"""Durable state (`--state-file`): the file format, Foundry's snapshot/restore, and the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import StartEmulator, make_seed

from emulator.foundry import persistence
from emulator.foundry.core.principals import Directory
from emulator.foundry.core.runtimes import RuntimeRegistry
from emulator.foundry.core.tokens import AccessToken, digest
from emulator.platform.settings import Settings
from emulator.platform.statefile import (
    WRITE_BATCH,
    StateFileError,
    Walk,
    canonical_pieces,
    collect,
    load_state,
    restore,
    save_state,
)
from emulator.transport import server as server_module
from emulator.transport.server import save_state_file, save_state_periodically
from emulator.web.app import build_emulator

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "/multipass/api/oauth2/token"
REVOKE = "/multipass/api/oauth2/revoke_token"
GET_CURRENT = "/api/v2/admin/users/getCurrent"
CONNECTIONS = "/api/v2/connectivity/connections"
RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
JANE = {"Authorization": "Bearer local-token-jane"}
SERVICE = {"client_id": "foundry-service", "client_secret": "foundry-service-secret"}
APP = "ri.foundry.main.deployed-app.kept"


# The file format ----------------------------------------------------------------------------


def test_save_then_load_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    document = {"foundry": {"tokens": [{"digest": "ab", "n": 1.5}], "note": "é"}}
    save_state(path, document)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_state(path) == document
    # Atomic: nothing is left beside the file (the temporary file was renamed over it).
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    # Saving again replaces the file and keeps its mode.
    save_state(path, {"foundry": {}})
    assert load_state(path) == {"foundry": {}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def test_canonical_pieces_join_to_the_canonical_encoding_in_small_calls() -> None:
    rows = [[index, f"name {index}", index / 7, index % 2 == 0, None] for index in range(500)]
    document = {
        "zeta": {"b": [1, 2.5, "x"], "a": {"deep": {"deeper": [{"k": "v"}] * 3}}},
        "alpha": {"rows": rows, "text": 'quote " é \u2028 \n', "empty": [], "none": {}},
        "big": {f"key{index:04d}": {"n": index} for index in range(100)},
    }
    pieces = list(canonical_pieces(document))
    assert "".join(pieces) == _canonical(document)
    # Long containers are walked at any depth: no piece is more than one row or record.
    assert len(pieces) > 1000
    assert max(len(piece) for piece in pieces) < 200
    with pytest.raises(TypeError, match="strings"):
        "".join(canonical_pieces({"a": {1: "x"}}))


def test_generators_are_written_as_lists_where_walk_mappings_lead_to_them() -> None:
    def rows() -> Any:
        return ([index, "row"] for index in range(3))

    # Deep in the data: reached through Walk mappings and a short list that holds them.
    lazy = {"a": {"b": [Walk(id="d1", snapshots=[Walk(id="s1", rows=rows())])]}}
    plain = {"a": {"b": [{"id": "d1", "snapshots": [{"id": "s1", "rows": list(rows())}]}]}}
    assert "".join(canonical_pieces(lazy)) == _canonical(plain)
    # Without the marks the writer would hand the generator to json.dumps, which refuses it.
    unmarked = {"a": {"b": [{"id": "d1", "snapshots": [{"id": "s1", "rows": rows()}]}]}}
    with pytest.raises(TypeError, match="generator"):
        "".join(canonical_pieces(unmarked))


def test_a_saved_file_is_canonical_json_in_sorted_envelope_order(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    # Bigger than one write batch, and partly made by a deferred function (a service's
    # capture), partly plain data carried from an earlier run.
    rows = [{"id": f"row-{index}", "payload": "x" * 100} for index in range(WRITE_BATCH // 80)]
    save_state(path, {"fabric": lambda: {"rows": rows}, "elsewhere": {"kept": 1}})
    raw = path.read_bytes()
    envelope = json.loads(raw)
    assert list(envelope) == ["format", "savedAt", "services", "sha256", "version"]
    assert raw == _canonical(envelope).encode()
    assert load_state(path) == {"fabric": {"rows": rows}, "elsewhere": {"kept": 1}}


def test_foundry_tokens_are_saved_as_captured_on_the_loop(tmp_path: Path) -> None:
    tokens = {
        bytes([index]) * 32: AccessToken("jane", frozenset({"api:read"}), None, 1.0, 9.0, "seed")
        for index in range(3)
    }
    finish = persistence.capture(Directory(), tokens, {}, {}, {}, RuntimeRegistry(), lazy=True)
    # Revoked after the capture, before the worker renders it: the file keeps the state of
    # the moment of the capture, one consistent view.
    next(iter(tokens.values())).revoke()
    path = tmp_path / "state.json"
    save_state(path, {"foundry": finish})
    saved = load_state(path)
    assert saved is not None
    assert [token["revoked"] for token in saved["foundry"]["tokens"]] == [False, False, False]
    assert len(saved["foundry"]["tokens"]) == 3


def test_a_missing_file_is_no_state(tmp_path: Path) -> None:
    assert load_state(tmp_path / "absent.json") is None


def _refused(path: Path, fragment: str) -> None:
    with pytest.raises(StateFileError) as caught:
        load_state(path)
    message = str(caught.value)
    assert str(path) in message
    assert fragment in message
    assert "\n" not in message


def test_truncated_edited_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, {"foundry": {"tokens": [{"username": "jane"}]}})
    whole = path.read_bytes()

    path.write_bytes(whole[: len(whole) // 2])
    _refused(path, "not valid JSON")

    envelope = json.loads(whole)
    envelope["services"]["foundry"]["tokens"][0]["username"] = "mallory"
    path.write_text(json.dumps(envelope))
    _refused(path, "checksum mismatch")

    envelope = json.loads(whole)
    envelope["version"] = 2
    path.write_text(json.dumps(envelope))
    _refused(path, "unsupported version 2")

    envelope = json.loads(whole)
    envelope["format"] = "something-else"
    path.write_text(json.dumps(envelope))
    _refused(path, "not a foundry-emulator state file")

    path.write_bytes(b"\xff\xfe not json")
    _refused(path, "not valid JSON")

    path.write_text("[1, 2]")
    _refused(path, "not a JSON object")


# Foundry snapshot and restore ---------------------------------------------------------------


async def _client_credentials_token(client: httpx.AsyncClient) -> str:
    response = await client.post(
        TOKEN, data={"grant_type": "client_credentials", "scope": "api:admin-read", **SERVICE}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def _current_user_status(client: httpx.AsyncClient, token: str) -> int:
    response = await client.get(GET_CURRENT, headers={"Authorization": f"Bearer {token}"})
    return response.status_code


CONNECTION_BODY: dict[str, Any] = {
    "parentFolderRid": "ri.compass.main.folder.4a1b2c3d",
    "displayName": "Kept API",
    "configuration": {
        "type": "rest",
        "domains": [
            {
                "host": "api.kept.example",
                "port": 443,
                "scheme": "HTTPS",
                "auth": {
                    "type": "bearerToken",
                    "bearerToken": {"type": "asPlaintextValue", "value": "kept-bearer-1"},
                },
            }
        ],
        "additionalSecrets": {
            "type": "asSecretsWithPlaintextValues",
            "secrets": {"KEY": "kept-key-2"},
        },
    },
    "worker": {"type": "foundryWorker", "networkEgressPolicyRids": []},
}


async def test_restored_emulator_keeps_tokens_connections_and_runtimes(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    with trio.fail_after(30):
        first = await start_emulator()
        async with first.client() as client:
            kept = await _client_credentials_token(client)
            revoked = await _client_credentials_token(client)
            response = await client.post(REVOKE, data={"token": revoked, **SERVICE})
            assert response.status_code == 200, response.text
            assert await _current_user_status(client, revoked) == 401
            created = await client.post(
                CONNECTIONS + "?preview=true", json=CONNECTION_BODY, headers=JANE
            )
            assert created.status_code == 200, created.text
            rid = created.json()["rid"]
            runtime = await client.post(RUNTIMES, json={"runtimeId": "kept", "deployedAppRid": APP})
            assert runtime.status_code == 200, runtime.text
            module_token = runtime.json()["moduleAuthToken"]
        secrets = dict(first.foundry.connectivity.connections[rid].secrets)
        assert sorted(secrets.values()) == ["kept-bearer-1", "kept-key-2"]
        save_state(path, {"foundry": first.foundry.snapshot()})
        # The file holds digests of access tokens, never their values.
        assert kept not in path.read_text()

        second = await start_emulator()
        async with second.client() as client:
            assert await _current_user_status(client, kept) == 401
            document = load_state(path)
            assert document is not None
            restore(path, second.emulator.services, document)
            assert await _current_user_status(client, kept) == 200
            assert await _current_user_status(client, revoked) == 401
            assert second.foundry.identity.tokens.by_digest[digest(revoked)].revoked
            # Seeded tokens still work.
            assert (await client.get(GET_CURRENT, headers=JANE)).status_code == 200
            got = await client.get(f"{CONNECTIONS}/{rid}?preview=true", headers=JANE)
            assert got.status_code == 200, got.text
            assert got.json()["displayName"] == "Kept API"
            assert "kept-bearer-1" not in got.text
            assert "kept-key-2" not in got.text
        assert second.foundry.connectivity.connections[rid].secrets == secrets
        foundry = second.foundry
        assert foundry.runtimes.authenticate("kept", module_token).runtime_id == "kept"
        assert foundry.runtimes.resolve(APP, None).runtime_id == "kept"
        assert foundry.broker.runtimes is foundry.runtimes


async def test_bad_data_is_refused_and_changes_nothing(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    with trio.fail_after(30):
        first = await start_emulator()
        async with first.client() as client:
            kept = await _client_credentials_token(client)
            runtime = await client.post(RUNTIMES, json={"runtimeId": "kept", "deployedAppRid": APP})
            assert runtime.status_code == 200, runtime.text
        data = first.foundry.snapshot()
        # Valid tokens come first; the bad runtime comes last: nothing may be loaded.
        data["runtimes"][-1]["token"] = 12
        second = await start_emulator()
        before = second.foundry.identity.tokens.count()
        with pytest.raises(StateFileError) as caught:
            restore(path, second.emulator.services, {"foundry": data})
        assert str(path) in str(caught.value)
        assert "runtimes[" in str(caught.value)
        assert second.foundry.identity.tokens.count() == before
        assert "kept" not in second.foundry.runtimes.runtimes
        async with second.client() as client:
            assert await _current_user_status(client, kept) == 401
        # Data of a service that does not run now is carried into later saves, not refused.
        carried = restore(path, second.emulator.services, {"elsewhere": {"kept": 1}})
        assert carried == {"elsewhere": {"kept": 1}}
        assert collect(second.emulator.services, carried)["elsewhere"] == {"kept": 1}


def test_settings_read_the_state_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    settings = Settings.resolve({"FOUNDRY_EMULATOR_STATE_FILE": str(path)})
    assert settings.state_file == path
    assert Settings().state_file is None


async def test_a_failing_save_is_logged_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.json"
    emulator = build_emulator(Settings(state_file=path, state_dir=tmp_path), make_seed(None))
    await save_state_file(emulator, trio.Lock())
    before = path.read_bytes()
    foundry = emulator.services["foundry"]

    def broken() -> Any:
        def finish() -> dict[str, Any]:
            raise TypeError("a rendering bug")

        return finish

    monkeypatch.setattr(foundry, "capture", broken)
    await save_state_file(emulator, trio.Lock())  # does not raise: the server goes on
    assert path.read_bytes() == before
    assert "cannot save the state file" in caplog.text


async def test_state_is_saved_at_intervals(autojump_clock: Any, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    emulator = build_emulator(
        Settings(state_file=path, state_save_interval=30.0, state_dir=tmp_path), make_seed(None)
    )
    saving = trio.Lock()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(save_state_periodically, emulator, saving)
        await trio.sleep(29)  # allowed: virtual time on the autojump clock
        assert load_state(path) is None
        await trio.sleep(2)  # allowed: virtual time on the autojump clock
        # The save that started at 30 s holds the lock until its file is written.
        async with saving:
            document = load_state(path)
        nursery.cancel_scope.cancel()
    assert document is not None
    assert {entry["digest"] for entry in document["foundry"]["tokens"]} == {
        digest(token).hex() for token in ("local-token-jane", "local-token-bob")
    }


async def test_long_saves_come_less_often(
    autojump_clock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    emulator = build_emulator(
        Settings(state_file=path, state_save_interval=30.0, state_dir=tmp_path), make_seed(None)
    )
    saves: list[float] = []

    async def counted(emulator: Any, saving: trio.Lock) -> None:
        # No worker thread here: the autojump clock would jump past it.
        saves.append(trio.current_time())
        await trio.lowlevel.checkpoint()

    monkeypatch.setattr(server_module, "save_state_file", counted)
    # Each save measures 6 s on the injected clock: at most a tenth of the time, so the next
    # comes 60 s later instead of 30.
    readings = iter(float(n) for n in range(0, 1000, 6))
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            partial(server_module.save_state_periodically, elapsed=lambda: next(readings)),
            emulator,
            trio.Lock(),
        )
        await trio.sleep(200)  # allowed: virtual time on the autojump clock
        nursery.cancel_scope.cancel()
    assert [round(at - start) for at in saves] == [30, 90, 150]


# The command line ---------------------------------------------------------------------------


async def _start(tmp_path: Path, state_file: Path, stderr: Any) -> trio.Process:
    return await trio.lowlevel.open_process(
        [
            sys.executable, "-m", "emulator", "serve",
            "--port", "0", "--no-tls", "--free-ports",
            "--state-dir", str(tmp_path),
            "--state-file", str(state_file),
            "--log-level", "info",
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
    )  # fmt: skip


async def _banner_url(process: trio.Process) -> str:
    assert process.stdout is not None
    seen = b""
    while b"Stop with" not in seen:
        chunk = await process.stdout.receive_some()
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    line = next(x for x in seen.decode().splitlines() if x.startswith("HTTP:"))
    return line.split()[1]


async def _stop(process: trio.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await process.wait()


async def test_cli_saves_on_sigterm_and_restores_on_start(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    log_path = tmp_path / "stderr.txt"
    with trio.fail_after(60), log_path.open("wb") as stderr:
        process = await _start(tmp_path, state_file, stderr)
        try:
            url = await _banner_url(process)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                token = await _client_credentials_token(client)
            code = await _stop(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert code == 0, log_path.read_text()[-2000:]
        assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

        process = await _start(tmp_path, state_file, stderr)
        try:
            url = await _banner_url(process)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert await _current_user_status(client, token) == 200
            code = await _stop(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert code == 0
    log = log_path.read_text()
    assert "Traceback" not in log
    assert token not in log


async def test_cli_refuses_a_corrupt_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    save_state(state_file, {"foundry": {}})
    state_file.write_bytes(state_file.read_bytes()[:-10])
    with trio.fail_after(30):
        result = await trio.run_process(
            [
                sys.executable, "-m", "emulator", "serve",
                "--port", "0", "--no-tls",
                "--state-dir", str(tmp_path),
                "--state-file", str(state_file),
            ],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("emulator: error: state file ")
    assert str(state_file) in lines[0]
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["runtimes"][0].update(token=""), "runtimes[0].token: must not be empty"),
        (lambda d: d["runtimes"][0].update(resets="3"), "runtimes[0].resets: expected an integer"),
        (lambda d: d["runtimes"][0].update(extra=1), "runtimes[0].extra: unknown key"),
        (lambda d: d["tokens"][0].update(digest="00"), "tokens[0].digest: must be a SHA-256"),
        (lambda d: d["tokens"][0].pop("revoked"), "tokens[0].revoked: required field"),
        (lambda d: d.update(grants={}), "grants: expected a list"),
    ],
    ids=["empty token", "string count", "unknown key", "short digest", "missing", "not a list"],
)
async def test_malformed_saved_records_name_their_path(
    start_emulator: StartEmulator, change: Any, message: str
) -> None:
    running = await start_emulator()
    data = running.foundry.snapshot()
    assert data["runtimes"]
    assert data["tokens"]
    change(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        running.foundry.restore(data)
