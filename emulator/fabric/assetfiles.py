"""Asset bytes beside the state file: `<state-file>.assets/<asset id>`, one file per asset.

Owns `AssetFiles`: writing an asset's bytes once, atomically (a 0600 temporary file in the
directory, flushed to disk, then renamed; the directory is 0700), reading them back, and
pruning the files no saved asset names. The state file itself holds only each asset's
metadata and sha256 (persistence.py), never its bytes. Writing and reading block: the API calls
`write` from a worker thread; `read` runs while the state is restored, before serving.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import BinaryIO

import attrs

from ..platform.files import write_atomically
from .core.assets import Asset

# Asset ids become file names: only these characters (the plane's ids are uuids), so a saved
# id can never name a path outside the directory.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


@attrs.define
class AssetFiles:
    directory: Path
    # Ids whose bytes are on disk (written here or restored): only these are saved as assets.
    kept: set[str] = attrs.field(factory=set)

    @classmethod
    def beside(cls, state_file: Path) -> AssetFiles:
        return cls(state_file.with_name(state_file.name + ".assets"))

    def path_of(self, asset_id: str) -> Path:
        if not FILE_NAME.fullmatch(asset_id):
            raise ValueError(f"asset id {asset_id!r} cannot name a file")
        return self.directory / asset_id

    def write(self, asset: Asset) -> None:
        """Write the bytes of `asset` (blocking: call it from a worker thread)."""
        target = self.path_of(asset.id)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

        def write(stream: BinaryIO) -> None:
            for chunk in asset.iter_bytes():
                stream.write(chunk)

        write_atomically(target, write)  # a 0600 file, renamed into place
        self.kept.add(asset.id)

    def read(self, asset_id: str) -> bytes:
        """The bytes saved for `asset_id` (OSError if there are none)."""
        return self.path_of(asset_id).read_bytes()

    def prune(self, keep: set[str]) -> None:
        """Delete every file but those of `keep`: assets uploaded after the last save, or
        dropped by a reset, that no saved state names any more."""
        self.kept = set(keep)
        with contextlib.suppress(FileNotFoundError):
            for entry in self.directory.iterdir():
                if entry.name not in keep:
                    with contextlib.suppress(OSError):
                        entry.unlink()
