"""The artifact files `--state-file` keeps, in a directory beside it (`<state-file>.artifacts`).

Owns `ArtifactDir`. The JSON state never holds an artifact's bytes (a 1,000,000-row file job's
results are hundreds of megabytes); instead `keep(artifacts)` puts each live artifact in this
directory as one file named by its id: a hard link to the engine's result file where the file
system allows it (no copy, no extra disk), else a copy; an artifact held in memory (a rejects
file) is written out. Each file is written as the platform writes the state file itself: a
temporary file in the same directory, flushed to disk, renamed into place, then the directory
synced. An artifact never changes, so a file is written once per process and later saves only
refer to it.

The bound: at most `max_bytes` (2 GiB by default) of artifacts, newest first; an older one past
the bound is not kept (after a restart it answers 410, as an expired one does). A file is
deleted only once no state file that may be on disk can name it: the one this save is about
to write, and the previous save's, since the platform replaces the file after `snapshot`
returns and a crash in between leaves the old one. If a save did not land (the state file's
identity did not change since the last save: the write failed), the files of every save since
the last one that landed stay too. So the directory holds at most the bound plus what the
saves not yet superseded on disk named.

`problem(artifact_id, size)` checks a saved file before a restore changes anything; `take`
links or copies a saved file into the engine's work directory. Blocking file I/O: a server's
save calls `keep` in its worker thread (FoundryOpsInstance.capture), one save at a time.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

import attrs

from ..platform.files import sync_directory, write_atomically
from .core.artifacts import Artifact

log = logging.getLogger("emulator.foundryops")

MAX_KEPT_BYTES = 2 * 1024**3
# An artifact id is also a file name here, so only ids of this shape are kept (no path tricks).
_NAME = re.compile(r"^art_[0-9A-Za-z]{1,64}$")
_TEMPORARY = ".tmp"


def is_artifact_name(artifact_id: str) -> bool:
    return _NAME.match(artifact_id) is not None


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes `source`'s bytes: a hard link, or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _identity(path: Path | None) -> tuple[int, ...] | None:
    """Which state file is on disk: a save replaces it with a new file (a new inode)."""
    if path is None:
        return None
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_mtime_ns, found.st_size)


@attrs.define
class ArtifactDir:
    path: Path
    max_bytes: int = MAX_KEPT_BYTES
    # The state file the directory belongs to (to tell whether the last save landed).
    state_file: Path | None = None
    # The files in the directory this process wrote or restored from: id -> size in bytes.
    _files: dict[str, int] = attrs.field(factory=dict, init=False)
    # What the previous save named, and everything named by saves since the last one known
    # to be on disk (the state file on disk names a subset of it).
    _previous: set[str] = attrs.field(factory=set, init=False)
    _unconfirmed: set[str] = attrs.field(factory=set, init=False)
    # The state file's identity when the previous save was taken.
    _seen: tuple[int, ...] | None = attrs.field(default=None, init=False)

    @classmethod
    def beside(cls, state_file: Path) -> ArtifactDir:
        state_file = Path(state_file)
        return cls(state_file.with_name(f"{state_file.name}.artifacts"), state_file=state_file)

    # Saving ------------------------------------------------------------------------------------

    def keep(self, artifacts: Iterable[Artifact]) -> dict[str, int]:
        """Put `artifacts` (newest first) in the directory up to `max_bytes`; the size of
        each one kept, by id. A file that cannot be written is logged and not kept: a save
        never fails because of one artifact."""
        try:
            self.path.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            log.error("cannot keep artifacts in %s: %s", self.path, error.strerror or error)
            return {}
        kept: dict[str, int] = {}
        total = 0
        for artifact in artifacts:
            artifact_id = artifact.artifact_id
            if not is_artifact_name(artifact_id):
                continue
            size = self._files.get(artifact_id)
            if size is None:
                if total + artifact.size > self.max_bytes:
                    continue
                try:
                    size = self._write(artifact)
                except OSError as error:
                    reason = error.strerror or type(error).__name__
                    log.error("cannot keep artifact %s: %s", artifact_id, reason)
                    continue
                self._files[artifact_id] = size
            if total + size > self.max_bytes:
                continue
            total += size
            kept[artifact_id] = size
        sync_directory(self.path)
        identity = _identity(self.state_file)
        if identity != self._seen:
            # The previous save landed: the file on disk names at most what it named.
            self._unconfirmed = set(self._previous)
        self._prune(set(kept) | self._unconfirmed)
        self._unconfirmed |= set(kept)
        self._previous = set(kept)
        self._seen = identity
        return kept

    def _write(self, artifact: Artifact) -> int:
        target = self.path / artifact.artifact_id
        # A name `_prune` recognises as left over if the process dies mid-write.
        temporary = self.path / f".{artifact.artifact_id}{_TEMPORARY}"
        data = artifact.data
        if data is not None:
            write_atomically(target, lambda stream: stream.write(data), temporary=temporary)
            return target.stat().st_size
        if artifact.path is None:
            raise FileNotFoundError(f"artifact {artifact.artifact_id} has no bytes")
        temporary.unlink(missing_ok=True)
        try:
            _link_or_copy(artifact.path, temporary)
            # A linked file's data may still be in the page cache only.
            with temporary.open("rb") as stream:
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return target.stat().st_size

    def _prune(self, protected: set[str]) -> None:
        """Delete artifact files no save on disk can refer to, and leftover temporary files
        (a crash mid-write). Files of other names are not ours and stay."""
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") and name.endswith(_TEMPORARY):
                stale = is_artifact_name(name[1 : -len(_TEMPORARY)])
            else:
                stale = is_artifact_name(name) and name not in protected
            if stale:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                self._files.pop(name, None)

    # Restoring --------------------------------------------------------------------------------

    def problem(self, artifact_id: str, size: int) -> str | None:
        """Why the saved file of `artifact_id` cannot be restored, or None if it can."""
        if not is_artifact_name(artifact_id):
            return "not an artifact id (art_ and letters or digits)"
        file = self.path / artifact_id
        try:
            found = file.stat()
        except FileNotFoundError:
            return f"its file {file} is missing"
        except OSError as error:
            return f"cannot read its file {file} ({error.strerror or error})"
        if not stat.S_ISREG(found.st_mode):
            return f"{file} is not a file"
        if found.st_size != size:
            return f"its file {file} has {found.st_size} bytes, not {size}"
        return None

    def take(self, artifact_id: str, directory: Path) -> Path:
        """The saved file of `artifact_id`, linked (or copied) into `directory`."""
        target = directory / f"restored-{artifact_id}"
        target.unlink(missing_ok=True)
        _link_or_copy(self.path / artifact_id, target)
        return target

    def adopt(self, sizes: dict[str, int]) -> None:
        """The restored files are this directory's: not written again, kept by the next save."""
        self._files.update(sizes)
        self._previous = set(sizes)
        self._unconfirmed = set(sizes)
        self._seen = _identity(self.state_file)
