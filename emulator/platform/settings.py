"""Server settings: one frozen value built from defaults, environment variables and flags.

Owns the names, defaults and parsing of every process-level option (which services run, their
listeners, TLS, base URL, state directory, logging, HTTP limits). Variables are `EMULATOR_*`;
every `FOUNDRY_EMULATOR_*` name of the product's first release is still read, and an
`EMULATOR_*` variable wins over its old name. Service behaviour (token lifetimes, job timeouts,
queue depths) belongs to the seed, not here. Knows services only by name: a service's default
ports come from its `Service` class. Imports nothing from the rest of the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

ENV_PREFIX = "EMULATOR_"
# The first release's prefix; still honoured, below EMULATOR_* in precedence.
LEGACY_ENV_PREFIX = "FOUNDRY_EMULATOR_"
LOG_LEVELS = ("debug", "info", "warning", "error")
HTTP_SERVERS = ("emulator", "hypercorn")


class SettingsError(ValueError):
    """An option has a value that cannot be used; the message names the option."""


def default_state_dir() -> Path:
    """The per-user directory for the CA and other state (XDG state home)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "foundry-emulator"


@attrs.frozen
class Settings:
    """Everything the server process needs to know before the seed is read."""

    host: str = "127.0.0.1"
    # The services to run (None: every service with a block in the seed).
    services: tuple[str, ...] | None = None
    # The primary service's ports (the first service in the registry, Foundry): the bare
    # `--port N` / `--tls-port N` of the first release. None: the service's default.
    port: int | None = None
    tls_port: int | None = None
    # Per-service ports, from `--port SERVICE=N` / `--tls-port SERVICE=N`.
    ports: tuple[tuple[str, int], ...] = ()
    tls_ports: tuple[tuple[str, int], ...] = ()
    # Every listener not given a port binds port 0 (a free port): the embedded API and the
    # pytest plugin set this so tests never collide.
    ephemeral_ports: bool = False
    # Once every listener is bound, write their URLs here as JSON (atomically); None: off.
    endpoints_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    http_enabled: bool = True
    tls_enabled: bool = True
    cert_hosts: tuple[str, ...] = ()
    base_url: str | None = None
    state_dir: Path = attrs.field(factory=default_state_dir, converter=Path)
    seed_path: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    # Durable state (tokens, connections, runtimes) saved here and restored on start; None: off.
    state_file: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    # Seconds between saves of the state file (it is also saved at shutdown).
    state_save_interval: float = 30.0
    log_level: str = "info"
    access_log: bool = False
    # How long in-flight requests may finish after SIGINT/SIGTERM before they are cut.
    graceful_timeout: float = 5.0
    # Idle keep-alive connections are closed after this many seconds.
    keep_alive_timeout: float = 75.0
    # Largest JSON or form body the emulator reads (raw result uploads are streamed instead).
    max_body_bytes: int = 8 * 1024 * 1024
    # Largest request head (request line plus headers) a client may send.
    max_header_bytes: int = 64 * 1024
    # A JSON or form body must arrive within this many seconds (a trickling client gets 408).
    body_timeout: float = 30.0
    # How many recent requests /_emulate/requests keeps; 0 turns the request log off.
    request_log_size: int = 1000
    # Who speaks HTTP: "emulator" (its own HTTP/1.1 and HTTP/2 servers, emulator.transport.h1/h2) or
    # "hypercorn" (Hypercorn's trio worker with emulator.transport.hypercorn_compat's patches).
    http_server: str = "emulator"

    def __attrs_post_init__(self) -> None:
        for name in ("port", "tls_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise SettingsError(f"{name} must be between 0 and 65535, got {value}")
        for name, value in (*self.ports, *self.tls_ports):
            if not 0 <= value <= 65535:
                raise SettingsError(f"the port of {name} must be between 0 and 65535, got {value}")
        if not (self.http_enabled or self.tls_enabled):
            raise SettingsError("--no-http and --no-tls together leave no listener")
        if self.http_server not in HTTP_SERVERS:
            raise SettingsError(f"http server must be one of {', '.join(HTTP_SERVERS)}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise SettingsError(f"base URL must start with http:// or https://: {self.base_url}")
        if self.graceful_timeout < 0 or self.keep_alive_timeout <= 0 or self.body_timeout <= 0:
            raise SettingsError("timeouts must be positive")
        if self.state_save_interval <= 0:
            raise SettingsError("the state save interval must be positive")
        if self.request_log_size < 0:
            raise SettingsError("the request log size cannot be negative")
        if self.max_body_bytes < 1024 or self.max_header_bytes < 1024:
            raise SettingsError("body and header limits must be at least 1024 bytes")

    def listener_ports(
        self, name: str, primary: bool, defaults: tuple[int, int]
    ) -> tuple[int, int]:
        """The (HTTP, HTTPS) ports of service `name`: `--port name=N` first, then the bare
        `--port N` for the primary service, then 0 with `ephemeral_ports`, then `defaults`."""
        chosen = []
        for per_service, bare, default in (
            (self.ports, self.port, defaults[0]),
            (self.tls_ports, self.tls_port, defaults[1]),
        ):
            port = dict(per_service).get(name)
            if port is None and primary:
                port = bare
            if port is None:
                port = 0 if self.ephemeral_ports else default
            chosen.append(port)
        return chosen[0], chosen[1]

    @classmethod
    def resolve(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Defaults, then `FOUNDRY_EMULATOR_*`, then `EMULATOR_*` variables, then explicit
        overrides (flags). Overrides whose value is None are treated as "not given".

        `EMULATOR_PORT` (and `..._TLS_PORT`) take a bare port for the primary service or a
        list of `service=port` pairs separated by commas, as the repeatable flag does.
        """
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            for prefix in (LEGACY_ENV_PREFIX, ENV_PREFIX):
                variable = prefix + field.name.upper()
                raw = environ.get(variable)
                if raw is None or raw == "":
                    continue
                if field.name in ("port", "tls_port") and "=" in raw:
                    pairs = parse_service_ports(raw.split(","), variable)
                    values["ports" if field.name == "port" else "tls_ports"] = pairs
                    continue
                values[field.name] = _parse(variable, field.type, raw)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls(**values)


def parse_service_ports(items: Sequence[str], where: str) -> tuple[tuple[str, int], ...]:
    """`["fabric=0", "foundry=4000"]` as pairs; `where` names the flag or variable in errors."""
    pairs: list[tuple[str, int]] = []
    for item in items:
        name, sep, number = item.strip().partition("=")
        if not sep or not name.strip() or not number.strip().isdigit():
            raise SettingsError(f"{where}: expected SERVICE=PORT or a port number, got {item!r}")
        pairs.append((name.strip(), int(number)))
    return tuple(pairs)


def _parse(variable: str, kind: object, raw: str) -> Any:
    """Turn one environment variable into the field's type; errors name the variable."""
    text = str(kind)
    try:
        if text in ("int", "int | None"):
            return int(raw)
        if text == "float":
            return float(raw)
        if text == "bool":
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if "tuple[str, ...]" in text:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if "tuple" in text:
            return parse_service_ports(raw.split(","), variable)
        if "Path" in text:
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise SettingsError(f"{variable}: cannot read {raw!r} as {text}") from None
