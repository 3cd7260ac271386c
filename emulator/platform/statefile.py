"""The durable state file (`--state-file`): an atomic, checksummed JSON envelope of service data.

Owns the file format, writing it atomically (a 0600 temporary file in the same directory, fsync,
rename) and reading it back, refusing anything unreadable, partial or edited with a one-line
`StateFileError`. Also collects and restores the data of services through their `capture` /
`snapshot` / `restore` hooks (emulator/platform/service.py). Knows nothing about any service's
contents; imports nothing from trio, quart, hypercorn or yaml, nor from any service package.

Saving a large state must not stall a server that goes on serving: `capture` runs on the event
loop and only takes what may still change, and `save_state` (in a worker thread) finishes each
service's data and writes the file as canonical JSON in pieces (`canonical_pieces`), each a
small `json.dumps` call, so the thread never holds the interpreter for long at a stretch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .files import sync_directory, write_atomically

if TYPE_CHECKING:
    from .service import ServiceInstance

FORMAT = "foundry-emulator-state"
VERSION = 1


class StateFileError(ValueError):
    """The state file cannot be used; the message is one line naming the file and the problem."""


# A service's data, or a function (from `capture`) that finishes it off the event loop.
Captured = Mapping[str, Any] | Callable[[], Mapping[str, Any]]
# Containers this deep (services, a service's data, its sections) are always walked piece by
# piece; deeper ones only when longer than WALK_LENGTH (a long list of rows), so one
# `json.dumps` call never encodes more than one record or a short container.
WALK_DEPTH = 3
WALK_LENGTH = 64
# Bytes gathered before they are hashed and written.
WRITE_BATCH = 256 * 1024


class Walk(dict[str, Any]):
    """A mapping the writer always walks key by key, at any depth (`canonical_pieces`): put
    one around each mapping on the way to a generator or a long list nested deep in a
    service's data. Otherwise a plain dict."""


def _walked(value: dict[str, Any] | list[Any] | tuple[Any, ...], depth: int) -> bool:
    if depth < WALK_DEPTH or len(value) > WALK_LENGTH or type(value) is Walk:
        return True
    # A short list is walked when it holds what must be: a Walk mapping or a generator.
    items = value if not isinstance(value, dict) else ()
    return any(type(item) is Walk or isinstance(item, Iterator) for item in items)


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def checksum(services: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical(services)).hexdigest()


def canonical_pieces(value: Any, depth: int = 0) -> Iterator[str]:
    """`_canonical(value)` (sorted keys, no spaces, ASCII) as consecutive text pieces: the
    same bytes once joined, made by many small encoder calls instead of one long one.

    An iterator (a generator) is written as a list, item by item as it makes them: a service
    can hand over a long section whose records are rendered one at a time and dropped once
    written, instead of a whole rendered copy of its state held until the end. Containers
    near the top, long ones, `Walk` mappings and short lists holding those or generators are
    walked; anything else is one `json.dumps` call."""
    if isinstance(value, dict) and _walked(value, depth):
        yield "{"
        for index, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"state keys must be strings, not {type(key).__name__}")
            yield ("," if index else "") + json.dumps(key, ensure_ascii=True) + ":"
            yield from canonical_pieces(value[key], depth + 1)
        yield "}"
    elif isinstance(value, Iterator) or (isinstance(value, list | tuple) and _walked(value, depth)):
        yield "["
        for index, item in enumerate(value):
            if index:
                yield ","
            yield from canonical_pieces(item, depth + 1)
        yield "]"
    else:
        yield json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def save_state(path: Path, document: Mapping[str, Captured]) -> None:
    """Write `document` (service key -> data, or a function from a service's `capture` that
    makes it) to `path` atomically, readable by the owner only. Call it from a worker thread.

    The file is never seen half-written: the data goes to a temporary file created with mode
    0600 beside it, is flushed to disk, and then replaces the old file in one rename. It is
    the envelope as canonical JSON (sorted keys), written in pieces while the checksum of
    `services` is computed over the same bytes.
    """
    path = Path(path)
    services = {name: dict(data() if callable(data) else data) for name, data in document.items()}
    directory = path.parent if str(path.parent) else Path(".")

    def write(stream: BinaryIO) -> None:
        # The envelope's keys in sorted order: format, savedAt, services, sha256, version.
        stream.write(b'{"format":' + _canonical(FORMAT) + b',"savedAt":' + _canonical(time.time()))
        stream.write(b',"services":')
        digest = hashlib.sha256()
        batch: list[str] = []
        size = 0
        for piece in canonical_pieces(services):
            batch.append(piece)
            size += len(piece)
            if size >= WRITE_BATCH:
                data = "".join(batch).encode("ascii")
                digest.update(data)
                stream.write(data)
                batch, size = [], 0
        data = "".join(batch).encode("ascii")
        digest.update(data)
        stream.write(data)
        stream.write(
            b',"sha256":' + _canonical(digest.hexdigest()) + b',"version":'
            + _canonical(VERSION) + b"}"
        )  # fmt: skip

    # The temporary file has mode 0600, so the secrets are never readable by others.
    write_atomically(directory / path.name, write)
    sync_directory(directory)


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


def capture(
    services: Mapping[str, ServiceInstance], carried: Mapping[str, Any] | None = None
) -> dict[str, Captured]:
    """On the event loop: what `save_state` needs, by service name (each running service's
    `capture`, which finishes its data later, off the loop), plus the `carried` data of
    services saved by an earlier run that do not run now (kept, not lost)."""
    document: dict[str, Captured] = dict(carried or {})
    for name, service in services.items():
        finish = service.capture()
        if finish is not None:
            document[name] = finish
    return document


def collect(
    services: Mapping[str, ServiceInstance], carried: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Every service's whole `snapshot` at once, as plain JSON-ready values (tests and
    tools; the server saves through `capture`)."""
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
