"""`foundry-emulator module run|env`: point a real compute module at a running emulator.

Owns creating or resetting a runtime session over HTTP, writing the Module-Auth-Token to a
private file (no trailing newline: both module libraries send the file's bytes as a header),
building the environment both the Python and the Node library read, and running the module
(with replicas, forwarding SIGINT/SIGTERM, removing the token file, passing on the exit code).
Uses only the standard library's HTTP client: it runs wherever the emulator is installed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import attrs

RUNTIMES_PATH = "/_emulate/foundry/compute-modules/runtimes"
DEFAULT_EMULATOR_URL = "http://127.0.0.1:4000"
# The variables the module libraries read (real-clients.md sections 1.1 and 2.1).
URI_VARIABLES = (
    "RUNTIME_HOST",
    "RUNTIME_PORT",
    "GET_JOB_URI",
    "POST_RESULT_URI",
    "POST_SCHEMA_URI",
    "RESTART_NOTIFICATION_URI",
)


class LauncherError(Exception):
    """A one-line problem for the user (exit code 1)."""


@attrs.frozen
class RuntimeSession:
    runtime_id: str
    module_auth_token: str
    variables: Mapping[str, str]
    ca_path: str | None

    @classmethod
    def from_json(cls, data: Any) -> RuntimeSession:
        if not isinstance(data, dict):
            raise LauncherError("the emulator's runtime answer is not a JSON object")
        token = data.get("moduleAuthToken")
        environment = data.get("environment")
        if not isinstance(token, str) or not isinstance(environment, dict):
            raise LauncherError("the emulator's runtime answer lacks moduleAuthToken/environment")
        variables = {name: str(environment[name]) for name in URI_VARIABLES if name in environment}
        missing = [name for name in URI_VARIABLES if name not in variables]
        if missing:
            raise LauncherError(f"the emulator did not give {', '.join(missing)}")
        ca = environment.get("CONNECTIONS_TO_OTHER_PODS_CA_PATH") or data.get("caPath")
        return cls(
            runtime_id=str(data.get("runtimeId", "")),
            module_auth_token=token,
            variables=variables,
            ca_path=str(ca) if ca else None,
        )

    def environment(self, token_file: Path) -> dict[str, str]:
        env = dict(self.variables)
        env["MODULE_AUTH_TOKEN"] = str(token_file)
        if self.ca_path:
            env["CONNECTIONS_TO_OTHER_PODS_CA_PATH"] = self.ca_path
            env["DEFAULT_CA_PATH"] = self.ca_path
        return env


def create_session(
    emulator_url: str,
    runtime_id: str,
    *,
    deployed_app: str | None = None,
    branch: str | None = None,
    rotate_token: bool = False,
) -> RuntimeSession:
    body: dict[str, Any] = {"runtimeId": runtime_id}
    if deployed_app:
        body["deployedAppRid"] = deployed_app
    if branch:
        body["branch"] = branch
    if rotate_token:
        body["rotateToken"] = True
    request = urllib.request.Request(
        emulator_url.rstrip("/") + RUNTIMES_PATH,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = _error_text(error)
        raise LauncherError(f"the emulator refused the runtime session: {detail}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        raise LauncherError(
            f"no emulator answers at {emulator_url} ({_reason(error)}); start one with "
            "`foundry-emulator serve` or pass --emulator URL"
        ) from None
    except ValueError:
        raise LauncherError("the emulator's answer is not JSON") from None
    return RuntimeSession.from_json(data)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    return str(reason)


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(error.read())
        return f"{error.code} {body.get('error')}: {body.get('error_description')}"
    except (ValueError, AttributeError):
        return f"HTTP {error.code}"


def write_token_file(token: str, path: Path | None = None) -> Path:
    """The token in a file only its owner can read, with no trailing newline."""
    if path is None:
        fd, name = tempfile.mkstemp(prefix="foundry-module-token-")
        path = Path(name)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token)
    return path


def run_module(session: RuntimeSession, command: Sequence[str], *, replicas: int = 1) -> int:
    """Run `replicas` copies of the module; returns the exit code to pass on."""
    if not command:
        raise LauncherError("give the module command after --, e.g. -- python app.py")
    token_file = write_token_file(session.module_auth_token)
    env = {**os.environ, **session.environment(token_file)}
    processes: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            for _ in range(replicas):
                processes.append(subprocess.Popen(list(command), env=env))
        except OSError as error:
            forward(signal.SIGTERM, None)
            raise LauncherError(f"cannot start {command[0]}: {error.strerror}") from None
        codes = [process.wait() for process in processes]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        token_file.unlink(missing_ok=True)
    return next((code for code in codes if code != 0), 0)


def format_environment(env: Mapping[str, str], style: str) -> str:
    if style == "shell":
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    if style == "dotenv":
        return "".join(f"{name}={json.dumps(value)}\n" for name, value in env.items())
    if style == "docker":
        # docker --env-file takes values literally (no quotes, no expansion).
        return "".join(f"{name}={value}\n" for name, value in env.items())
    raise LauncherError(f"unknown format {style!r}")


def print_error(message: str) -> None:
    print(f"foundry-emulator: error: {message}", file=sys.stderr)
