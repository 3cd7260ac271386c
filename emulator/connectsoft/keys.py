"""The ConnectSoft token-signing key, kept in the state directory so tokens survive restarts.

Owns `load_or_create_signing_key(state_dir)`: reads `connectsoft-signing-key.json` (a private
P-256 JWK, mode 0600) or makes one. A file that cannot be read as such a key is an error naming
the file, never silently replaced (tokens already handed out would stop verifying without a
word). Sync file I/O (call it from a thread in async code); imports nothing from trio or quart.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

KEY_FILE = "connectsoft-signing-key.json"


class SigningKeyError(Exception):
    """The key file exists but is not a private P-256 JWK."""


def load_or_create_signing_key(state_dir: Path) -> ECKey:
    path = state_dir / KEY_FILE
    if not path.exists():
        _create(state_dir, path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        key = ECKey.import_key(data)
    except (OSError, ValueError, JoseError) as error:
        raise SigningKeyError(f"{path}: not a signing key ({type(error).__name__})") from None
    if not key.is_private or key.as_dict(private=False).get("crv") != "P-256":
        raise SigningKeyError(f"{path}: not a private P-256 key")
    return key


def _create(state_dir: Path, path: Path) -> None:
    """Write a new key so that no reader ever sees half a file: a private temporary file,
    then a hard link to the final name, which fails if another process got there first (its
    key is then the one everybody uses)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ECKey.generate_key("P-256").as_dict(private=True))
    # mkstemp creates the file with mode 0600: the private key is never readable by others.
    handle, temporary = tempfile.mkstemp(prefix=f".{KEY_FILE}.", dir=state_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
