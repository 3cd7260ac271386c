"""Assets: raw bytes kept in a store bounded per asset and in total.

Owns `Asset` (metadata plus its chunks), `AssetUpload` (bytes arrive chunk by chunk and are
counted as they come, so an oversized upload is refused before it is held whole) and
`AssetStore`. A full store refuses new uploads (413) rather than dropping older assets: losing
stored data silently would surprise a test more than a clear refusal.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import attrs

from .errors import NotFound, PayloadTooLarge, ValidationFailed

MIB = 1024 * 1024
# type/subtype with optional parameters, printable ASCII only (it is sent back as a header).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(;[ -~]*)?")


def kind_of(content_type: str) -> str:
    major = content_type.split("/", 1)[0].strip().lower()
    return major if major in ("image", "audio", "video", "text") else "file"


@attrs.define
class Asset:
    id: str
    organization_id: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str
    created_by: str
    created_at: float
    chunks: tuple[bytes, ...] = ()

    @property
    def kind(self) -> str:
        return kind_of(self.content_type)

    def iter_bytes(self) -> Iterator[bytes]:
        return iter(self.chunks)


@attrs.define
class AssetUpload:
    """One upload in progress. `add` refuses the chunk that would pass either bound."""

    store: AssetStore
    organization_id: str
    filename: str
    content_type: str
    created_by: str
    _chunks: list[bytes] = attrs.field(factory=list)
    _size: int = 0
    _digest: hashlib._Hash = attrs.field(factory=hashlib.sha256)

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        size = self._size + len(chunk)
        if size > self.store.max_asset_bytes:
            raise PayloadTooLarge(f"asset exceeds {self.store.max_asset_bytes} bytes")
        if self.store.total_bytes + size > self.store.max_total_bytes:
            raise PayloadTooLarge(f"asset store is full ({self.store.max_total_bytes} bytes)")
        self._chunks.append(chunk)
        self._digest.update(chunk)
        self._size = size

    def finish(self, asset_id: str, now: float) -> Asset:
        if self._size == 0:
            raise ValidationFailed("the asset body is empty")
        if self.store.total_bytes + self._size > self.store.max_total_bytes:
            raise PayloadTooLarge(f"asset store is full ({self.store.max_total_bytes} bytes)")
        asset = Asset(
            asset_id,
            self.organization_id,
            self.filename,
            self.content_type,
            self._size,
            self._digest.hexdigest(),
            self.created_by,
            now,
            tuple(self._chunks),
        )
        self.store.assets[asset.id] = asset
        self.store.total_bytes += asset.size_bytes
        self._chunks = []
        return asset


@attrs.define
class AssetStore:
    max_asset_bytes: int = 64 * MIB
    max_total_bytes: int = 512 * MIB
    assets: dict[str, Asset] = attrs.field(factory=dict)
    total_bytes: int = 0

    def begin(
        self, organization_id: str, filename: str, content_type: str, created_by: str
    ) -> AssetUpload:
        if not filename.strip():
            raise ValidationFailed("filename is required")
        if not MEDIA_TYPE.fullmatch(content_type):
            raise ValidationFailed("content_type must be a media type such as image/png")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in filename) or len(filename) > 255:
            raise ValidationFailed("filename must be at most 255 printable characters")
        return AssetUpload(self, organization_id, filename, content_type, created_by)

    def get(self, asset_id: str) -> Asset:
        asset = self.assets.get(asset_id)
        if asset is None:
            raise NotFound(f"asset {asset_id} not found")
        return asset
