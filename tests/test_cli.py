"""The command line as a user runs it: a real subprocess for serve, check and init."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "emulator", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


async def read_until(stream: trio.abc.ReceiveStream, marker: bytes, limit: float = 30) -> bytes:
    """Read a process's output until `marker` appears (waiting on the pipe, not sleeping)."""
    seen = b""
    with trio.fail_after(limit):
        while marker not in seen:
            chunk = await stream.receive_some()
            if not chunk:
                raise AssertionError(f"output ended before {marker!r}: {seen.decode()}")
            seen += chunk
    return seen


def url_after(banner: str, label: str) -> str:
    line = next(line for line in banner.splitlines() if line.startswith(label))
    return line.split()[1]


async def test_serve_prints_banner_answers_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process(
        [
            PYTHON,
            "-m",
            "emulator",
            "serve",
            "--port",
            "0",
            "--tls-port",
            "0",
            "--free-ports",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        banner = (await read_until(process.stdout, b"Stop with")).decode()
        # The default seed runs every service, each under its own heading with its URLs.
        for heading in ("(foundry)", "(fabric)", "(connectsoft)", "(foundryops)"):
            assert "== " in banner, banner
            assert heading in banner, heading
        http_url = url_after(banner, "HTTP:")
        https_url = url_after(banner, "HTTPS:")
        ca_path = url_after(banner, "CA:")
        assert Path(ca_path) == tmp_path / "ca.pem"
        for expected in ("Seed:", "Users:", "Token:", "Runtime:", "Deployed app:", "curl -H"):
            assert expected in banner
        async with httpx.AsyncClient(base_url=http_url, http1=False, http2=True) as client:
            response = await client.get("/_emulate/health")
            assert (response.status_code, response.http_version) == (200, "HTTP/2")
        verify = ssl.create_default_context(cafile=ca_path)
        async with httpx.AsyncClient(base_url=https_url, verify=verify, http2=True) as client:
            response = await client.get("/_emulate/health")
            assert (response.status_code, response.http_version) == (200, "HTTP/2")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            code = await process.wait()
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_ca_is_kept_and_reused_between_starts(tmp_path: Path) -> None:
    from emulator.transport.tls import ensure_certificates

    first = ensure_certificates(tmp_path)
    ca = first.ca_path.read_bytes()
    cert = first.cert_path.read_bytes()
    second = ensure_certificates(tmp_path)
    assert second.ca_path.read_bytes() == ca
    assert second.cert_path.read_bytes() == cert
    assert oct(first.key_path.stat().st_mode & 0o777) == "0o600"
    third = ensure_certificates(tmp_path, ["emulator.internal"])
    assert third.ca_path.read_bytes() == ca
    assert third.cert_path.read_bytes() != cert


def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), "--no-tls", "--state-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_seed_typo_fails_with_path_and_exit_2(tmp_path: Path) -> None:
    seed = tmp_path / "typo.yaml"
    seed.write_text("foundry:\n  users:\n    - username: a\n    - usrname: b\n", encoding="utf-8")
    for args in (
        ("check", str(seed)),
        ("serve", "--seed", str(seed), "--state-dir", str(tmp_path)),
    ):
        result = run_cli(*args)
        assert result.returncode == 2
        assert f"{seed}: foundry.users[1].usrname: unknown key" in result.stderr
        assert "Traceback" not in result.stderr


def test_init_writes_a_seed_that_passes_check(tmp_path: Path) -> None:
    out = tmp_path / "starter.yaml"
    assert run_cli("init", "--out", str(out)).returncode == 0
    text = out.read_text(encoding="utf-8")
    assert text.count("#") > 20
    checked = run_cli("check", str(out))
    assert checked.returncode == 0, checked.stderr
    assert "users: 1" in checked.stdout
    again = run_cli("init", "--out", str(out))
    assert again.returncode == 2
    assert "exists" in again.stderr


def test_check_default_seed_and_console_script() -> None:
    result = run_cli("check", "seeds/default.yaml")
    assert result.returncode == 0
    assert "runtimes: 1" in result.stdout
    script = Path(PYTHON).with_name("foundry-emulator")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("foundry-emulator ")


def test_environment_variables_configure_serve(tmp_path: Path) -> None:
    from emulator.platform.settings import Settings, SettingsError

    settings = Settings.resolve(
        {
            "FOUNDRY_EMULATOR_PORT": "0",
            "FOUNDRY_EMULATOR_TLS_ENABLED": "false",
            "FOUNDRY_EMULATOR_CERT_HOSTS": "a.test,b.test",
            "FOUNDRY_EMULATOR_STATE_DIR": str(tmp_path),
        },
        {"port": 5000},
    )
    assert (settings.port, settings.tls_enabled, settings.cert_hosts) == (
        5000,
        False,
        ("a.test", "b.test"),
    )
    assert settings.state_dir == tmp_path
    bad = run_cli("serve", "--no-http", "--no-tls")
    assert bad.returncode == 2
    assert "no listener" in bad.stderr
    try:
        Settings.resolve({"FOUNDRY_EMULATOR_PORT": "many"})
    except SettingsError as error:
        message = str(error)
    else:
        message = ""
    assert "FOUNDRY_EMULATOR_PORT" in message
    assert Settings.resolve({"FOUNDRY_EMULATOR_HTTP_SERVER": "hypercorn"}).http_server == (
        "hypercorn"
    )
    with pytest.raises(SettingsError, match="http server must be one of emulator, hypercorn"):
        Settings.resolve({"FOUNDRY_EMULATOR_HTTP_SERVER": "nginx"})
    env_run = subprocess.run(
        [PYTHON, "-m", "emulator", "serve", "--no-tls"],
        env={**os.environ, "FOUNDRY_EMULATOR_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert env_run.returncode == 2
    assert "log level" in env_run.stderr


def test_seed_problems_found_while_building_state_exit_2(tmp_path: Path) -> None:
    seed = tmp_path / "auth.yaml"
    seed.write_text(
        "foundry:\n  connections:\n    - display_name: X\n"
        "      parent_folder_rid: ri.compass.main.folder.f\n"
        "      domains:\n        - host: api.example.com\n          auth: {type: bearerToken}\n",
        encoding="utf-8",
    )
    result = run_cli("check", str(seed))
    assert result.returncode == 2
    assert "foundry.connections[0].domains[0]" in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_chosen_services_on_free_ports_writes_the_endpoints_file(
    tmp_path: Path,
) -> None:
    endpoints_file = tmp_path / "endpoints.json"
    process = await trio.lowlevel.open_process(
        [
            *[PYTHON, "-m", "emulator", "serve"],
            *["--services", "foundry,fabric"],
            *["--port", "foundry=0", "--tls-port", "foundry=0"],
            *["--port", "fabric=0", "--tls-port", "fabric=0"],
            *["--endpoints-file", str(endpoints_file), "--state-dir", str(tmp_path)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        # The banner comes after the file is written (both after every listener is bound).
        await read_until(process.stdout, b"Stop with")
        written = json.loads(endpoints_file.read_text())
        assert set(written["services"]) == {"foundry", "fabric"}
        assert written["pid"] == process.pid
        assert written["ca"] == str(tmp_path / "ca.pem")
        verify = ssl.create_default_context(cafile=written["ca"])
        for name, urls in written["services"].items():
            async with httpx.AsyncClient(verify=verify) as client:
                for url in (urls["http"], urls["https"]):
                    health = await client.get(f"{url}/_emulate/health")
                    assert health.json()["service"] == name
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--services", "foundry,nope"], "unknown service 'nope'"),
        (["--port", "nope=1"], "unknown service 'nope' in a port option"),
        (["--port", "fabric=x"], "--port: expected SERVICE=PORT"),
        (["--tls-port", "http"], "--tls-port: expected SERVICE=PORT or a port"),
    ],
)
def test_bad_service_options_are_one_line_and_exit_2(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = run_cli("serve", *arguments, "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
