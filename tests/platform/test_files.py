"""Durable files: an atomic write leaves the old file whole when it fails, and nothing beside."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import BinaryIO

import pytest

from emulator.platform.files import write_atomically


def test_a_write_replaces_the_file_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "kept"
    target.write_bytes(b"old")
    write_atomically(target, lambda stream: stream.write(b"new"))
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]


@pytest.mark.parametrize("named", [False, True])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, named: bool) -> None:
    target = tmp_path / "kept"
    target.write_bytes(b"old")
    temporary = tmp_path / ".kept.tmp" if named else None
    if temporary is not None:
        temporary.write_bytes(b"left by a crash")  # replaced, then removed with the failure

    def half(stream: BinaryIO) -> None:
        stream.write(b"half of it")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, half, temporary=temporary)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
