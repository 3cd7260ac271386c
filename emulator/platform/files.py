"""Durable files: writing one so that it is never seen half-written, and making a rename last.

Owns `write_atomically` (the bytes go to a temporary file beside the target, created with mode
0600 so secrets are readable by the owner only, are flushed to disk, and the file is renamed
over the target in one step; a failure leaves the target as it was and no temporary file) and
`sync_directory` (best effort: the rename itself survives a crash). The state file, Fabric's
asset files and FoundryOps' artifact files are written this way. Blocking: call them from a
worker thread. Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomically(
    path: Path, write: Callable[[BinaryIO], Any], *, temporary: Path | None = None
) -> None:
    """Replace `path` with what `write` puts in the stream it is given. The temporary file is
    `.<name>.<random>.tmp` beside `path`, or `temporary` (a name the caller can recognise
    after a crash; an old file of that name is replaced)."""
    if temporary is None:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        temporary = Path(name)
    else:
        temporary.unlink(missing_ok=True)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def sync_directory(path: Path) -> None:
    """Make the renames done in directory `path` durable (best effort: not every file system
    allows it)."""
    with contextlib.suppress(OSError):
        handle = os.open(path, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
