"""The durable state file (`--state-file`): an atomic, checksummed JSON envelope of service data.

Owns the file format, writing it atomically (a 0600 temporary file in the same directory, fsync,
rename) and reading it back, refusing anything unreadable, partial or edited with a one-line
`StateFileError`. Also collects and restores the data of services through their `snapshot` /
`restore` hooks (emulator/platform/service.py). Knows nothing about any service's contents;
imports nothing from trio, quart, hypercorn or yaml, nor from any service package.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .service import ServiceInstance

FORMAT = "foundry-emulator-state"
VERSION = 1


class StateFileError(ValueError):
    """The state file cannot be used; the message is one line naming the file and the problem."""


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def checksum(services: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(services)).hexdigest()


def save_state(path: Path, document: Mapping[str, Any]) -> None:
    """Write `document` (service key -> data) to `path` atomically, readable by the owner only.

    The file is never seen half-written: the data goes to a temporary file created with mode
    0600 beside it, is flushed to disk, and then replaces the old file in one rename.
    """
    path = Path(path)
    services = dict(document)
    envelope = {
        "format": FORMAT,
        "version": VERSION,
        "savedAt": time.time(),
        "sha256": checksum(services),
        "services": services,
    }
    data = json.dumps(envelope, sort_keys=True, indent=1).encode()
    directory = path.parent if str(path.parent) else Path(".")
    # mkstemp creates the file with mode 0600, so the secrets are never readable by others.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # Make the rename itself durable (best effort: not every file system allows this).
    with contextlib.suppress(OSError):
        directory_handle = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_handle)
        finally:
            os.close(directory_handle)


def load_state(path: Path) -> dict[str, Any] | None:
    """The services' data saved in `path`, or None if there is no such file.

    Raises StateFileError if the file cannot be read, is not JSON, is not this format or
    version, or its checksum does not match (a partial or hand-edited file).
    """
    path = Path(path)

    def refuse(problem: str) -> StateFileError:
        return StateFileError(f"state file {path}: {problem}")

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise refuse(f"cannot read it ({error.strerror or error})") from None
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise refuse("not valid JSON (partial or corrupt file?)") from None
    if not isinstance(envelope, dict):
        raise refuse("not a JSON object")
    if envelope.get("format") != FORMAT:
        raise refuse(f"not a foundry-emulator state file (format must be {FORMAT!r})")
    version = envelope.get("version")
    if version != VERSION or isinstance(version, bool):
        raise refuse(f"unsupported version {version!r} (this emulator reads version {VERSION})")
    services = envelope.get("services")
    if not isinstance(services, dict):
        raise refuse("'services' must be an object")
    expected = envelope.get("sha256")
    if not isinstance(expected, str) or expected != checksum(services):
        raise refuse("checksum mismatch (the file is partial or was edited)")
    for key, data in services.items():
        if not isinstance(data, dict):
            raise refuse(f"the data of service {key!r} must be an object")
    return services


def collect(
    services: Mapping[str, ServiceInstance], carried: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The data of every running service that keeps durable state, by service name, plus the
    `carried` data of services saved by an earlier run that do not run now (kept, not lost)."""
    document: dict[str, Any] = dict(carried or {})
    for name, service in services.items():
        data = service.snapshot()
        if data is not None:
            document[name] = data
    return document


def restore(
    path: Path, services: Mapping[str, ServiceInstance], document: Mapping[str, Any]
) -> dict[str, Any]:
    """Give each running service its saved data; StateFileError (naming `path`) if any is
    refused. Returns the data of services that do not run now, to be carried into later saves.

    Each service's `restore` validates its whole data before it changes anything, so a refused
    service leaves its state as it was.
    """
    carried = {name: data for name, data in document.items() if name not in services}
    for name, data in document.items():
        if name not in services:
            continue
        try:
            services[name].restore(data)
        except (ValueError, TypeError, KeyError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise StateFileError(f"state file {path}: {name}: {message}") from None
    return carried
