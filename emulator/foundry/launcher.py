"""`emulator module run|env`: point a real compute module at a running emulator.

Owns creating or resetting a runtime session over HTTP, writing the Module-Auth-Token to a
private file (no trailing newline: both module libraries send the file's bytes as a header),
building the environment both the Python and the Node library read, and running the module
(with replicas, forwarding SIGINT/SIGTERM, removing the token file, passing on the exit code).
Uses only the standard library's HTTP client: it runs wherever the emulator is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import ssl
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

from ..platform.service import CliCommand, CommandError

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
    """What the runtime-creation route answered (`moduleAuthToken` and `environment`)."""

    runtime_id: str
    module_auth_token: str = attrs.field(repr=False)
    variables: Mapping[str, str]
    ca_path: str | None
    # The runtime's URLs for one named replica: "{replica}" stands for its name.
    replica_template: str | None = None

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
        template = data.get("replicaUriTemplate")
        return cls(
            runtime_id=str(data.get("runtimeId", "")),
            module_auth_token=token,
            variables=variables,
            ca_path=str(ca) if ca else None,
            replica_template=template if isinstance(template, str) else None,
        )

    @property
    def has_tls(self) -> bool:
        return bool(self.variables.get("RUNTIME_PORT")) and self.variables[
            "GET_JOB_URI"
        ].startswith("https://")

    def environment(self, token_file: Path, replica: str = "") -> dict[str, str]:
        """Every variable both module libraries read; `replica` gives the process its own
        runtime paths (so its restart notification ends only its own jobs)."""
        env = dict(self.variables)
        if replica and self.replica_template is not None:
            base = self.replica_template.replace("{replica}", replica)
            env["GET_JOB_URI"] = base + "/job"
            env["POST_RESULT_URI"] = base + "/results"
            env["POST_SCHEMA_URI"] = base + "/schemas"
            env["RESTART_NOTIFICATION_URI"] = base + "/restart"
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
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed: {reason}; give the plain HTTP URL, e.g. {DEFAULT_EMULATOR_URL}"
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
        # Absolute: the module may run in another directory (or a container mounting it).
        path = path.absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # An existing file keeps its mode through O_CREAT: make it private either way.
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(token)
    return path


def replica_names(replicas: int) -> list[str]:
    """One process: the runtime's own paths. Several: each its own replica path."""
    if replicas == 1:
        return [""]
    return [f"replica-{number}" for number in range(1, replicas + 1)]


def warnings_for(session: RuntimeSession, env: Mapping[str, str]) -> list[str]:
    notes = []
    if not session.has_tls:
        notes.append(
            "the emulator has no HTTPS listener; the Python compute-module library needs one "
            "(serve without --no-tls)"
        )
    if env.get("NODE_ENV") == "development":
        notes.append("NODE_ENV=development makes @palantir/compute-module skip polling")
    return notes


def exit_code(returncode: int) -> int:
    """A child's status as a shell reports it: 128+N for death by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def run_module(session: RuntimeSession, command: Sequence[str], *, replicas: int = 1) -> int:
    """Run `replicas` copies of the module; returns the exit code to pass on.

    Each copy runs in its own process group, and SIGINT/SIGTERM reach the launcher only once
    (not also through the terminal's process group) and are passed to every copy's group, so
    a module's worker pool stops with it, as in a container.
    """
    if not command:
        raise LauncherError("give the module command after --, e.g. -- python app.py")
    if replicas < 1:
        raise LauncherError("--replicas must be at least 1")
    token_file = write_token_file(session.module_auth_token)
    processes: list[subprocess.Popen[bytes]] = []
    stopping: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for replica in replica_names(replicas):
            if stopping:
                break
            env = {**os.environ, **session.environment(token_file, replica)}
            if replica:
                env["FOUNDRY_EMULATOR_REPLICA"] = replica
            for note in warnings_for(session, env) if not processes else ():
                print_warning(note)
            try:
                processes.append(subprocess.Popen(list(command), env=env, process_group=0))
            except OSError as error:
                forward(signal.SIGTERM, None)
                for process in processes:
                    process.wait()
                raise LauncherError(f"cannot start {command[0]}: {error.strerror}") from None
        codes = [process.wait() for process in processes]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        token_file.unlink(missing_ok=True)
    return next((exit_code(code) for code in codes if code != 0), 0)


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


def print_warning(message: str) -> None:
    print(f"foundry-emulator: warning: {message}", file=sys.stderr, flush=True)


def configure_module_parser(module: argparse.ArgumentParser) -> None:
    """The arguments of `emulator module run|env`."""
    actions = module.add_subparsers(dest="module_command", required=True, metavar="ACTION")
    for name, text in (
        ("run", "create/reset a runtime session and run the module command"),
        ("env", "create/reset a runtime session and print the module's environment"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--runtime", required=True, help="runtime id")
        action.add_argument("--deployed-app", help="bind this deployed app RID to the runtime")
        action.add_argument("--branch", help="deployed app branch (default master)")
        action.add_argument(
            "--emulator",
            default=emulator_url_from_environment(os.environ),
            help="URL of the running emulator's Foundry listener (default $EMULATOR_URL, "
            "$FOUNDRY_EMULATOR_URL or http://127.0.0.1:4000)",
        )
        action.add_argument("--rotate-token", action="store_true", help="issue a new module token")
        if name == "run":
            action.add_argument("--replicas", type=int, default=1, help="copies of the module")
            action.add_argument(
                "module_argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS..."
            )
        else:
            action.add_argument("--format", choices=("shell", "dotenv", "docker"), default="shell")
            action.add_argument("--token-file", type=Path, help="where to write the token file")
    actions.add_parser(
        "clean",
        help="remove the token files `module env` left in the state directory",
        description="Remove the module-token-* files `module env` wrote to the state "
        "directory (files written with --token-file are yours to remove).",
    )


def emulator_url_from_environment(environ: Mapping[str, str]) -> str:
    return (
        environ.get("EMULATOR_URL") or environ.get("FOUNDRY_EMULATOR_URL") or DEFAULT_EMULATOR_URL
    )


TOKEN_FILE_PREFIX = "module-token-"


def clean_token_files(state_dir: Path) -> list[Path]:
    """Remove the token files `module env` wrote to the state directory; returns them."""
    removed = []
    for path in sorted(state_dir.glob(f"{TOKEN_FILE_PREFIX}*")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def run_module_command(args: argparse.Namespace, state_dir: Path) -> int:
    """`module run`, `env` or `clean`; a failure is a CommandError (one line, exit status 1)."""
    if args.module_command == "clean":
        removed = clean_token_files(state_dir)
        print(f"removed {len(removed)} token file(s) from {state_dir}")
        return 0
    try:
        session = create_session(
            args.emulator,
            args.runtime,
            deployed_app=args.deployed_app,
            branch=args.branch,
            rotate_token=args.rotate_token,
        )
        if args.module_command == "run":
            command = list(args.module_argv)
            if command[:1] == ["--"]:
                command = command[1:]
            if args.replicas < 1:
                raise LauncherError("--replicas must be at least 1")
            return run_module(session, command, replicas=args.replicas)
        token_file = write_token_file(
            session.module_auth_token,
            args.token_file or state_dir / f"{TOKEN_FILE_PREFIX}{args.runtime}",
        )
        sys.stdout.write(format_environment(session.environment(token_file), args.format))
        print(f"# token file: {token_file}", file=sys.stderr)
        return 0
    except LauncherError as error:
        raise CommandError(str(error), status=1) from None


MODULE_COMMAND = CliCommand(
    name="module",
    help="run a compute module against a running emulator",
    configure=configure_module_parser,
    run=run_module_command,
)
