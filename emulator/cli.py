"""The `foundry-emulator` command line: serve, check, init.

Owns argument parsing, logging set-up, exit codes (0 fine, 1 cannot serve, 2 bad seed or
options) and the startup banner. Every failure a user can cause prints one line, never a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from . import __version__
from .platform.seeds import Seed, default_seed_path, load_seed
from .platform.seedschema import SeedError
from .platform.service import Endpoints
from .platform.settings import Settings, SettingsError
from .web.app import Emulator, build_emulator, default_services

log = logging.getLogger("emulator")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="foundry-emulator",
        description="A local, stateful emulator of the Palantir Foundry HTTP APIs.",
    )
    parser.add_argument("--version", action="version", version=f"foundry-emulator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start the emulator")
    serve.add_argument(
        "--seed", type=Path, dest="seed_path", help="seed YAML (default: seeds/default.yaml)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="plain HTTP port, 0 for any (default 4000)")
    serve.add_argument("--tls-port", type=int, help="HTTPS port, 0 for any (default 4443)")
    serve.add_argument(
        "--no-http",
        action="store_const",
        const=False,
        dest="http_enabled",
        help="no plain HTTP listener",
    )
    serve.add_argument(
        "--no-tls", action="store_const", const=False, dest="tls_enabled", help="no HTTPS listener"
    )
    serve.add_argument(
        "--cert-host",
        action="append",
        dest="cert_hosts",
        metavar="NAME",
        help="extra host name for the certificate (repeatable)",
    )
    serve.add_argument(
        "--base-url", help="URL the emulator advertises (default: the HTTP listener's)"
    )
    serve.add_argument("--state-dir", type=Path, help="where the CA and other state live")
    serve.add_argument(
        "--state-file",
        type=Path,
        metavar="PATH",
        help="save tokens, connections and runtimes here (mode 0600) and restore them on start",
    )
    serve.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--access-log", action="store_const", const=True, help="log every request")
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        help="seconds in-flight requests get at shutdown (default 5)",
    )
    serve.add_argument(
        "--http-server",
        choices=("emulator", "hypercorn"),
        help="the emulator's own HTTP/1.1 and HTTP/2 servers (default), or Hypercorn's",
    )

    check = commands.add_parser("check", help="validate a seed file and summarise it")
    check.add_argument("file", type=Path)

    module = commands.add_parser("module", help="run a compute module against a running emulator")
    module_commands = module.add_subparsers(dest="module_command", required=True, metavar="ACTION")
    for name, text in (
        ("run", "create/reset a runtime session and run the module command"),
        ("env", "create/reset a runtime session and print the module's environment"),
    ):
        action = module_commands.add_parser(name, help=text)
        action.add_argument("--runtime", required=True, help="runtime id")
        action.add_argument("--deployed-app", help="bind this deployed app RID to the runtime")
        action.add_argument("--branch", help="deployed app branch (default master)")
        action.add_argument(
            "--emulator",
            default=os.environ.get("FOUNDRY_EMULATOR_URL", "http://127.0.0.1:4000"),
            help="URL of the running emulator (default $FOUNDRY_EMULATOR_URL or "
            "http://127.0.0.1:4000)",
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

    init = commands.add_parser("init", help="write a commented starter seed")
    init.add_argument("--out", type=Path, help="file to write (default: standard output)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.file)
    if args.command == "init":
        return _init(args.out, args.force)
    if args.command == "module":
        return _module(args)
    return _serve(args)


def _error(message: str) -> None:
    print(f"foundry-emulator: error: {message}", file=sys.stderr)


def _check(path: Path) -> int:
    try:
        seed = load_seed(path, default_services())
        build_emulator(Settings(), seed)
    except SeedError as error:
        _error(str(error))
        return 2
    print(f"{path}: OK")
    for line in seed_summary(seed):
        print(f"  {line}")
    return 0


def seed_summary(seed: Seed) -> list[str]:
    from .foundry.seed import FoundrySeed

    lines = [f"tokens: {len(seed.tokens)}"]
    foundry = seed.blocks.get("foundry")
    if isinstance(foundry, FoundrySeed):
        lines += [
            f"users: {len(foundry.users)}",
            f"oauth clients: {len(foundry.oauth_clients)}",
            f"connections: {len(foundry.connections)}",
            f"ontologies: {len(foundry.ontologies)} "
            f"({sum(len(o.queries) for o in foundry.ontologies)} queries)",
            f"runtimes: {len(foundry.compute_modules.runtimes)}",
            f"deployed apps: {len(foundry.compute_modules.deployed_apps)}",
        ]
    return lines


def _init(out: Path | None, force: bool) -> int:
    from .foundry.starter import STARTER_SEED

    if out is None:
        sys.stdout.write(STARTER_SEED)
        return 0
    if out.exists() and not force:
        _error(f"{out} exists; pass --force to overwrite it")
        return 2
    out.write_text(STARTER_SEED, encoding="utf-8")
    print(f"wrote {out}; check it with: foundry-emulator check {out}")
    return 0


def _module(args: argparse.Namespace) -> int:
    from .foundry import launcher

    try:
        session = launcher.create_session(
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
                raise launcher.LauncherError("--replicas must be at least 1")
            return launcher.run_module(session, command, replicas=args.replicas)
        token_file = launcher.write_token_file(
            session.module_auth_token,
            args.token_file or Settings().state_dir / f"module-token-{args.runtime}",
        )
        sys.stdout.write(launcher.format_environment(session.environment(token_file), args.format))
        print(f"# token file: {token_file}", file=sys.stderr)
        return 0
    except launcher.LauncherError as error:
        _error(str(error))
        return 1


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        name: getattr(args, name)
        for name in (
            "seed_path",
            "host",
            "port",
            "tls_port",
            "http_enabled",
            "tls_enabled",
            "base_url",
            "state_dir",
            "state_file",
            "log_level",
            "access_log",
            "graceful_timeout",
            "http_server",
        )
    }
    if args.cert_hosts:
        overrides["cert_hosts"] = tuple(args.cert_hosts)
    try:
        settings = Settings.resolve(os.environ, overrides)
    except SettingsError as error:
        _error(str(error))
        return 2
    configure_logging(settings.log_level)
    seed_path = settings.seed_path or default_seed_path()
    try:
        seed = load_seed(seed_path, default_services())
        # Building the state checks what only a service can (for example connection auth).
        emulator = build_emulator(settings, seed)
    except SeedError as error:
        _error(str(error))
        return 2
    # Durable state (--state-file): restore what the last run saved before serving anything.
    if settings.state_file is not None:
        from .platform.statefile import StateFileError, load_state, restore

        try:
            document = load_state(settings.state_file)
            if document is not None:
                restore(settings.state_file, emulator.services, document)
        except StateFileError as error:
            _error(str(error))
            return 2
    from .transport.server import ListenerError

    try:
        trio.run(_serve_until_signal, emulator)
    except (ListenerError, BaseExceptionGroup) as error:
        listener_error = _leaf(error, ListenerError)
        if listener_error is None:
            raise
        _error(str(listener_error))
        return 1
    return 0


def _leaf(error: BaseException, kind: type[Exception]) -> Exception | None:
    """The first exception of `kind` inside (possibly nested) exception groups."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
    return None


async def _serve_until_signal(emulator: Emulator) -> None:
    from .transport.server import serve

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def wait_for_signal() -> None:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                return

        async with trio.open_nursery() as nursery:
            endpoints = await nursery.start(
                lambda task_status: serve(
                    emulator, shutdown_trigger=wait_for_signal, task_status=task_status
                )
            )
            print(banner(emulator, endpoints), flush=True)


def banner(emulator: Emulator, endpoints: Endpoints) -> str:
    lines = [f"foundry-emulator {__version__} is ready"]
    if endpoints.http_url:
        lines.append(f"HTTP:          {endpoints.http_url}  (HTTP/1.1 and h2c)")
    if endpoints.https_url:
        lines.append(f"HTTPS:         {endpoints.https_url}  (HTTP/1.1 and h2)")
    if endpoints.ca_path:
        lines.append(f"CA:            {endpoints.ca_path}  (trust this for HTTPS)")
    lines.append(f"Base URL:      {endpoints.base_url}")
    lines.append(f"Seed:          {emulator.seed.source}")
    for service in emulator.services.values():
        lines.extend(service.banner_lines())
    lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
    return "\n".join(lines)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
