"""Downloadable artifacts (reject files, job results) and retention on the injected clock.

Owns `Artifact` (bytes or a file path, a content type, an expiry) and `ArtifactStore`, which
hands artifacts out until they expire (24 hours by default, the source's "Artifacts 24h") and
then answers 410 ARTIFACT_EXPIRED, and forgets them on `sweep(now)`; `live(now)` lists the
ones still served (what a state file keeps). Also owns
`rejects_ndjson_gz`, which writes rejected rows with their reasons as gzipped NDJSON.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable
from pathlib import Path

import attrs

from .errors import Gone, NotFound
from .schema import Rejection

ARTIFACT_RETENTION_SECONDS = 24 * 3600.0


@attrs.frozen
class Artifact:
    artifact_id: str
    kind: str  # "rejects" or "results"
    content_type: str
    filename: str
    created_at: float
    expires_at: float
    data: bytes | None = None
    path: Path | None = None

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return self.path.stat().st_size if self.path is not None and self.path.exists() else 0


@attrs.define
class ArtifactStore:
    retention_seconds: float = ARTIFACT_RETENTION_SECONDS
    artifacts: dict[str, Artifact] = attrs.field(factory=dict)
    expired: set[str] = attrs.field(factory=set)

    def add(self, artifact: Artifact) -> None:
        self.artifacts[artifact.artifact_id] = artifact

    def get(self, artifact_id: str, now: float) -> Artifact:
        artifact = self.artifacts.get(artifact_id)
        if artifact is None:
            if artifact_id in self.expired:
                raise Gone(
                    "ARTIFACT_EXPIRED",
                    f"Artifact '{artifact_id}' has expired (artifacts are kept 24 hours).",
                    {"artifact_id": artifact_id},
                )
            raise NotFound(
                "ARTIFACT_NOT_FOUND",
                f"Artifact '{artifact_id}' does not exist.",
                {"artifact_id": artifact_id},
            )
        if now >= artifact.expires_at:
            raise Gone(
                "ARTIFACT_EXPIRED",
                f"Artifact '{artifact_id}' has expired (artifacts are kept 24 hours).",
                {"artifact_id": artifact_id},
            )
        return artifact

    def live(self, now: float) -> list[Artifact]:
        """The artifacts not yet expired, newest first."""
        alive = [a for a in self.artifacts.values() if now < a.expires_at]
        alive.sort(key=lambda a: a.created_at, reverse=True)
        return alive

    def mark_expired(self, artifact_id: str) -> None:
        """Answer 410 for an id whose artifact is gone (expired, or not kept by a restart)."""
        if artifact_id not in self.artifacts:
            self.expired.add(artifact_id)

    def sweep(self, now: float) -> list[Artifact]:
        """Forget every expired artifact; returns them so the caller can delete their files."""
        gone = [a for a in self.artifacts.values() if now >= a.expires_at]
        for artifact in gone:
            del self.artifacts[artifact.artifact_id]
            self.expired.add(artifact.artifact_id)
        return gone


def rejects_ndjson_gz(rows: Iterable[tuple[int, object, tuple[Rejection, ...]]]) -> bytes:
    """One line per rejected row: {"row": index, "record": ..., "reasons": [...]}."""
    buffer = io.BytesIO()
    # mtime=0 keeps the bytes deterministic for the same rows.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as stream:
        for index, record, reasons in rows:
            line = {"row": index, "record": record, "reasons": [r.to_json() for r in reasons]}
            stream.write(json.dumps(line, separators=(",", ":"), default=str).encode() + b"\n")
    return buffer.getvalue()
