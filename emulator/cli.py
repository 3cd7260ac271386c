"""The `emulator` command line (also installed as `foundry-emulator`): serve, check, init, and
the subcommands services add (Foundry's `module`).

Owns argument parsing, logging set-up, exit codes (0 fine, 1 cannot serve, 2 bad seed or
options) and the startup banner. Every failure a user can cause prints one line, prefixed with
the name the program was called by, never a traceback. Knows services only through the
registry and the contract.
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
from . import services as registry
from .platform.seeds import default_seed_path, load_seed
from .platform.seedschema import SeedError
from .platform.service import CommandError, Endpoints, add_cli_parser
from .platform.settings import Settings, SettingsError, parse_service_ports
from .web.app import Emulator, build_emulator

log = logging.getLogger("emulator")

# The name errors and the banner use: the command the user typed (`foundry-emulator` stays an
# alias of `emulator` that behaves identically).
PROG = "emulator"


def _program_name() -> str:
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "foundry-emulator" if called == "foundry-emulator" else "emulator"


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(service.name for service in registry.registered_services())
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"A local, stateful emulator of cloud service APIs ({names}).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="start the emulator")
    serve.add_argument(
        "--seed", type=Path, dest="seed_path", help="seed YAML (default: seeds/default.yaml)"
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--services",
        help=f"comma-separated services to run ({names}; default: those with a seed block)",
    )
    serve.add_argument(
        "--port",
        action="append",
        metavar="[SERVICE=]N",
        help="plain HTTP port of SERVICE (repeatable), or of foundry when bare; 0 for any",
    )
    serve.add_argument(
        "--tls-port",
        action="append",
        metavar="[SERVICE=]N",
        help="HTTPS port of SERVICE (repeatable), or of foundry when bare; 0 for any",
    )
    serve.add_argument(
        "--free-ports",
        action="store_const",
        const=True,
        dest="ephemeral_ports",
        help="every listener not given a port picks a free one (find them with --endpoints-file)",
    )
    serve.add_argument(
        "--endpoints-file",
        type=Path,
        metavar="PATH",
        help="once listening, write every service's URLs, the CA path and the pid here (JSON)",
    )
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

    for service in registry.registered_services():
        for command in service.cli_commands():
            add_cli_parser(commands, command)

    init = commands.add_parser("init", help="write a commented starter seed")
    init.add_argument("--out", type=Path, help="file to write (default: standard output)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    global PROG
    PROG = _program_name()
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.file)
    if args.command == "init":
        return _init(args.out, args.force)
    if args.command == "serve":
        return _serve(args)
    try:
        return int(args.service_command.run(args, Settings.resolve(os.environ).state_dir))
    except (CommandError, SettingsError) as error:
        _error(str(error))
        return error.status if isinstance(error, CommandError) else 2


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _check(path: Path) -> int:
    try:
        seed = load_seed(path, registry.registered_services())
        build_emulator(Settings(), seed)
    except SeedError as error:
        _error(str(error))
        return 2
    print(f"{path}: OK")
    for service in registry.registered_services():
        if service.name not in seed.present:
            continue
        block = seed.blocks[service.name]
        print(f"  {service.name}:")
        for line in service.summary(block):
            print(f"    {line}")
        for warning in service.warnings(block):
            print(f"  warning: {warning}")
    return 0


def starter_seed() -> str:
    """The commented starter seed: every service's block under one header."""
    header = (
        f"# {PROG} seed. Check it with: {PROG} check THIS_FILE\n"
        "# Every key is optional unless marked (required). Unknown keys are errors.\n"
        "# A service runs when its block is here (or when `serve --services` names it).\n"
    )
    blocks = [
        block for service in registry.registered_services() if (block := service.starter_block())
    ]
    return header + "".join("\n" + block for block in blocks)


def _init(out: Path | None, force: bool) -> int:
    text = starter_seed()
    if out is None:
        sys.stdout.write(text)
        return 0
    if out.exists() and not force:
        _error(f"{out} exists; pass --force to overwrite it")
        return 2
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}; check it with: {PROG} check {out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        name: getattr(args, name)
        for name in (
            "seed_path",
            "host",
            "http_enabled",
            "tls_enabled",
            "base_url",
            "state_dir",
            "state_file",
            "log_level",
            "access_log",
            "graceful_timeout",
            "http_server",
            "endpoints_file",
            "ephemeral_ports",
        )
    }
    if args.cert_hosts:
        overrides["cert_hosts"] = tuple(args.cert_hosts)
    try:
        if args.services is not None:
            overrides["services"] = tuple(
                name.strip() for name in args.services.split(",") if name.strip()
            )
        for flag, bare, per_service in (
            ("--port", "port", "ports"),
            ("--tls-port", "tls_port", "tls_ports"),
        ):
            values = getattr(args, bare) or []
            pairs = parse_service_ports([v for v in values if "=" in v], flag)
            for value in values:
                if "=" not in value:
                    if not value.isdigit():
                        raise SettingsError(
                            f"{flag}: expected SERVICE=PORT or a port, got {value!r}"
                        )
                    overrides[bare] = int(value)
            if pairs:
                overrides[per_service] = pairs
        settings = Settings.resolve(os.environ, overrides)
        known = {service.name for service in registry.registered_services()}
        for name, _ in (*settings.ports, *settings.tls_ports):
            if name not in known:
                raise SettingsError(f"unknown service {name!r} in a port option")
    except SettingsError as error:
        _error(str(error))
        return 2
    configure_logging(settings.log_level)
    seed_path = settings.seed_path or default_seed_path()
    try:
        seed = load_seed(seed_path, registry.registered_services())
        # Building the state checks what only a service can (for example connection auth).
        emulator = build_emulator(settings, seed)
    except (SeedError, SettingsError) as error:
        _error(str(error))
        return 2
    # Durable state (--state-file): restore what the last run saved before serving anything.
    from .platform.statefile import StateFileError

    try:
        emulator.restore_state_file()
    except StateFileError as error:
        _error(str(error))
        return 2
    from .platform.runtime import tune_garbage_collector
    from .transport.server import ListenerError

    frozen = tune_garbage_collector()
    log.debug("garbage collector: %d objects frozen after start-up", frozen)
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


def banner(emulator: Emulator, endpoints: Endpoints | None = None) -> str:
    """What `serve` prints once every listener is bound: each service with its URLs and the
    credentials its seed offers."""
    lines = [f"{PROG} {__version__} is ready"]
    ca = next((s.endpoints.ca_path for s in emulator.sites.values() if s.endpoints.ca_path), None)
    if ca:
        lines.append(f"CA:            {ca}  (trust this for HTTPS)")
    lines.append(f"Seed:          {emulator.seed.source}")
    for site in emulator.sites.values():
        lines.append("")
        lines.append(f"== {site.service.title} ({site.name})")
        if site.endpoints.http_url:
            lines.append(f"HTTP:          {site.endpoints.http_url}  (HTTP/1.1 and h2c)")
        if site.endpoints.https_url:
            lines.append(f"HTTPS:         {site.endpoints.https_url}  (HTTP/1.1 and h2)")
        lines.append(f"Base URL:      {site.endpoints.base_url}")
        lines.extend(site.instance.banner_lines())
    lines.append("")
    lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
    return "\n".join(lines)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
