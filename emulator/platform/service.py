"""The contract between the generic emulator and an emulated service (Foundry, Fabric, ...).

Owns `Service` (a kind of emulated API: its name, default ports, seed block, `check` summary,
`init` starter block, CLI subcommands), `ServiceInstance` (one running service: routes, error
families, banner, background work, reset, shutdown, durable state, secrets to redact) and
`ServiceContext` (what the emulator gives every service: settings, clock, randomness and the
service's own listener endpoints). Every hook is explicit here, with a default where a service
may leave it out; nothing generic looks a hook up with `getattr`.

Adding a service is a package beside `emulator/foundry/` that subclasses these two classes, plus
one line in `emulator/services.py` (docs/architecture.md has the checklist). Imports no service,
no transport and no quart at run time (blueprints are only named in type annotations).
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import trio

from .clock import Clock, Randomness
from .errors import EMULATOR, ErrorFamily
from .seedschema import Node
from .settings import Settings

if TYPE_CHECKING:
    from quart import Blueprint

    from ..web.rawasgi import RawRoute


@attrs.define
class Endpoints:
    """Where one service listens; filled in by the server once its sockets are bound."""

    http_url: str | None = None
    https_url: str | None = None
    base_url: str = ""
    ca_path: Path | None = None
    # The host name a client should use to reach the HTTPS listener (covered by the certificate).
    runtime_host: str = "localhost"
    https_port: int | None = None
    http_port: int | None = None


@attrs.frozen
class ServiceContext:
    settings: Settings
    clock: Clock
    randomness: Randomness
    # This service's own listeners.
    endpoints: Endpoints


@attrs.frozen
class CliCommand:
    """A subcommand a service adds to the `emulator` command line (for example `module`)."""

    name: str
    help: str
    # Adds the subcommand's arguments to its parser.
    configure: Callable[[argparse.ArgumentParser], None]
    # Runs the subcommand with the parsed arguments and the state directory; returns the exit
    # status, or raises CommandError.
    run: Callable[[argparse.Namespace, Path], int]


class CommandError(Exception):
    """A service subcommand failed in a way the user caused: the CLI prints the message as one
    line, prefixed with the program name, and exits with `status`."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class ServiceInstance(ABC):
    """A running service: its state, routes and background work.

    Must implement `reset` and `describe`; every other hook has a default that does nothing.
    """

    # The family that answers on this service's listener for paths no prefix claims (unknown
    # routes): the emulator's plain shape unless the service speaks another everywhere.
    default_family: ErrorFamily = EMULATOR
    # Query parameter and header names whose values the request log must never show, in
    # addition to the generic ones (authorization, cookies, tokens, secrets, keys).
    secret_names: frozenset[str] = frozenset()

    def blueprints(self) -> Sequence[Blueprint]:
        """Quart blueprints with the service's ordinary routes."""
        return ()

    def raw_routes(self) -> Sequence[RawRoute]:
        """Hot or streaming routes served as raw ASGI in front of Quart (emulator.web.rawasgi);
        they appear in the OpenAPI document automatically."""
        return ()

    def error_families(self) -> Sequence[tuple[str, ErrorFamily]]:
        """Path prefixes and the error family that answers under each (longest prefix wins);
        a prefix claimed twice fails at start."""
        return ()

    def banner_lines(self) -> list[str]:
        """Lines for the start-up banner (credentials to try, a curl line); never a secret the
        user did not write in the seed themselves."""
        return []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work (expiry sweeps, timers); cancelled when the emulator stops."""
        task_status.started()
        await trio.sleep_forever()

    def begin_shutdown(self) -> None:  # noqa: B027 (a hook whose default is to do nothing)
        """Answer every waiting request now (the server is about to stop)."""

    @abstractmethod
    def reset(self) -> None:
        """Back to the seed, answering every waiting request."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A secret-free summary of the state, for `/_emulate/state` and the inspector."""

    def snapshot(self) -> dict[str, Any] | None:
        """The durable state as JSON-ready data for `--state-file`, or None if the service keeps
        nothing across restarts. May hold secrets: the file is written with mode 0600."""
        return None

    def capture(self) -> Callable[[], dict[str, Any]] | None:
        """The half of `snapshot` that must run on the event loop (a consistent view), as a
        function that makes the rest in a worker thread while the service goes on serving.
        The default does all of `snapshot` at once; a service with a large state overrides
        it (and then `snapshot` is `capture()()`) to take on the loop only what may still
        change, leaving records that no longer change to the function."""
        data = self.snapshot()
        if data is None:
            return None
        return lambda: data

    def restore(self, data: dict[str, Any]) -> None:
        """Take back what `snapshot` returned (called before serving). Validate all of it first,
        then replace state: on bad data raise ValueError and change nothing."""
        raise ValueError("this service keeps no durable state")

    def inspector_page(self) -> bytes | None:
        """The HTML page `GET /_emulate/` serves on this service's listeners, or None for the
        generic inspector (the `/_emulate/state` summary and the request log, live). The page
        may read only the `/_emulate` routes, which never carry a secret."""
        return None

    def embedded_handle(self, handle: Any) -> Any:
        """What the embedded API's `handle.service(name)` returns for this service, given the
        `EmulatorHandle` (whose `call` runs code on the emulator's loop from any thread): helpers
        for tests and programs. The instance itself by default."""
        return self


class Service(ABC):
    """A kind of emulated API. `name` is its seed block key, its `--services` name and the key
    of everything per service (ports, endpoints, state file, `/_emulate/state`)."""

    name: ClassVar[str]
    title: ClassVar[str]
    default_http_port: ClassVar[int]
    default_https_port: ClassVar[int]
    # Other top-level seed keys this service reads besides its own block (Foundry's `tokens:`).
    extra_seed_keys: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def read_seed(self, block: Node | None, extra: Mapping[str, Node]) -> Any:
        """Check and convert the seed block (None when the seed has no such block); `extra`
        holds the nodes of `extra_seed_keys` present in the seed. Raises SeedError."""

    @abstractmethod
    def start(self, seed: Any, context: ServiceContext) -> ServiceInstance: ...

    def summary(self, seed: Any) -> list[str]:
        """Lines `emulator check` prints for this service's part of a valid seed."""
        return []

    def starter_block(self) -> str:
        """This service's commented block for `emulator init` (YAML text, top-level key
        included), or "" for none. It must pass `check` as written."""
        return ""

    def warnings(self, seed: Any) -> list[str]:
        """Things in a valid seed that are probably mistakes (`check` prints them)."""
        return []

    def cli_commands(self) -> Sequence[CliCommand]:
        """Subcommands this service adds to the command line."""
        return ()


def add_cli_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: CliCommand
) -> argparse.ArgumentParser:
    """Register a service's subcommand (used by the CLI for every service's `cli_commands`)."""
    parser = subparsers.add_parser(command.name, help=command.help, description=command.help)
    command.configure(parser)
    parser.set_defaults(service_command=command)
    return parser
