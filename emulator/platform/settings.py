"""Server settings: one frozen value built from defaults, `FOUNDRY_EMULATOR_*` variables and flags.

Owns the names, defaults and parsing of every process-level option (listeners, TLS, base URL,
state directory, logging, HTTP limits). Service behaviour (token lifetimes, job timeouts, queue
depths) belongs to the seed, not here. Imports nothing from the rest of the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

ENV_PREFIX = "FOUNDRY_EMULATOR_"
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
    port: int = 4000
    tls_port: int = 4443
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
            if not 0 <= value <= 65535:
                raise SettingsError(f"{name} must be between 0 and 65535, got {value}")
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

    @classmethod
    def resolve(
        cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Defaults, then `FOUNDRY_EMULATOR_*` variables, then explicit overrides (flags).

        Overrides whose value is None are treated as "not given".
        """
        values: dict[str, Any] = {}
        for field in attrs.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = _parse(field.name, field.type, raw)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = value
        return cls(**values)


def _parse(name: str, kind: object, raw: str) -> Any:
    """Turn one environment variable into the field's type; errors name the variable."""
    variable = ENV_PREFIX + name.upper()
    text = str(kind)
    try:
        if text == "int":
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
        if "tuple" in text:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if "Path" in text:
            return Path(raw).expanduser()
        return raw
    except ValueError:
        raise SettingsError(f"{variable}: cannot read {raw!r} as {text}") from None
