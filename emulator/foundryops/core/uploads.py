"""Presigned uploads: signed, expiring PUT URLs served by the emulator, and the upload record.

Owns `Upload` (storage key `sk_...`, purpose match|dataset, the owning key id, expiry, size),
its state machine (`UploadStatus`: pending -> receiving -> uploaded, receiving -> pending when
a transfer breaks; `apply` is the only place the status is assigned), `Presigner` (HMAC-SHA256
over the method, storage key and expiry under a per-instance signing key that never leaves the
process) and `UploadTable`. A wrong signature answers 403 INVALID_SIGNATURE, an expired URL
403 UPLOAD_URL_EXPIRED. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import attrs

from .errors import Conflict, Forbidden, InvalidRequest, NotFound

PURPOSES = ("match", "dataset")
PRESIGN_TTL_SECONDS = 900.0


class UploadStatus(enum.Enum):
    PENDING = "pending"
    RECEIVING = "receiving"
    UPLOADED = "uploaded"


class UploadEvent(enum.Enum):
    BEGIN = "begin"
    FINISH = "finish"
    BREAK = "break"


TRANSITIONS: Mapping[tuple[UploadStatus, UploadEvent], UploadStatus] = {
    (UploadStatus.PENDING, UploadEvent.BEGIN): UploadStatus.RECEIVING,
    (UploadStatus.RECEIVING, UploadEvent.FINISH): UploadStatus.UPLOADED,
    (UploadStatus.RECEIVING, UploadEvent.BREAK): UploadStatus.PENDING,
}


@attrs.define(eq=False)
class Upload:
    storage_key: str
    purpose: str
    key_id: str
    created_at: float
    expires_at: float
    path: Path
    status: UploadStatus = UploadStatus.PENDING
    size: int = 0
    uploaded_at: float | None = None


def apply(upload: Upload, event: UploadEvent, now: float, *, size: int = 0) -> UploadStatus:
    new_status = TRANSITIONS.get((upload.status, event))
    if new_status is None:
        if upload.status is UploadStatus.UPLOADED:
            raise Conflict(
                "UPLOAD_ALREADY_COMPLETED",
                f"'{upload.storage_key}' has been uploaded already; presign a new URL.",
                {"storage_key": upload.storage_key},
            )
        raise Conflict(
            "UPLOAD_IN_PROGRESS",
            f"'{upload.storage_key}' is being uploaded by another request.",
            {"storage_key": upload.storage_key},
        )
    upload.status = new_status
    if new_status is UploadStatus.UPLOADED:
        upload.size = size
        upload.uploaded_at = now
    return new_status


@attrs.frozen
class Presigner:
    signing_key: bytes = attrs.field(repr=False)

    def sign(self, storage_key: str, expires: int) -> str:
        message = f"PUT\n{storage_key}\n{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def verify(self, storage_key: str, expires: str | None, sig: str | None, now: float) -> None:
        if not expires or not sig or not expires.isdigit():
            raise Forbidden(
                "INVALID_SIGNATURE",
                "The upload URL is not signed; presign a new one.",
                {"storage_key": storage_key},
            )
        if not hmac.compare_digest(self.sign(storage_key, int(expires)), sig):
            raise Forbidden(
                "INVALID_SIGNATURE",
                "The upload URL's signature is not valid.",
                {"storage_key": storage_key},
            )
        if now >= int(expires):
            raise Forbidden(
                "UPLOAD_URL_EXPIRED",
                "The upload URL has expired; presign a new one.",
                {"storage_key": storage_key},
            )


@attrs.define
class UploadTable:
    uploads: dict[str, Upload] = attrs.field(factory=dict)

    def add(self, upload: Upload) -> None:
        self.uploads[upload.storage_key] = upload

    def get(self, storage_key: str) -> Upload:
        upload = self.uploads.get(storage_key)
        if upload is None:
            raise NotFound(
                "UPLOAD_NOT_FOUND", f"No upload '{storage_key}'.", {"storage_key": storage_key}
            )
        return upload

    def uploaded(self, storage_key: object, key_id: str, purpose: str) -> Upload:
        """A finished upload of this key for this purpose (what a file job reads)."""
        if not isinstance(storage_key, str) or not storage_key:
            raise InvalidRequest(
                "INVALID_REQUEST",
                "source_key is required (the storage_key of an upload).",
                {"field": "source_key"},
            )
        upload = self.get(storage_key)
        if upload.key_id != key_id:
            raise NotFound(
                "UPLOAD_NOT_FOUND", f"No upload '{storage_key}'.", {"storage_key": storage_key}
            )
        if upload.status is not UploadStatus.UPLOADED:
            raise InvalidRequest(
                "UPLOAD_NOT_COMPLETED",
                f"'{storage_key}' has no file yet: PUT the file to its upload_url first.",
                {"storage_key": storage_key},
            )
        if upload.purpose != purpose:
            raise InvalidRequest(
                "INVALID_REQUEST",
                f"'{storage_key}' was presigned for purpose={upload.purpose}, not {purpose}.",
                {"storage_key": storage_key, "purpose": upload.purpose},
            )
        return upload

    def expired(self, now: float, retention: float) -> list[Upload]:
        """Uploads past their retention (files are artifacts: 24 hours) or never used."""
        gone = [
            u
            for u in self.uploads.values()
            if (u.uploaded_at is not None and now - u.uploaded_at >= retention)
            or (u.status is UploadStatus.PENDING and now >= u.expires_at)
        ]
        for upload in gone:
            del self.uploads[upload.storage_key]
        return gone
