"""Upload routes: presign (`POST /api/v2/uploads/presign?purpose=match|dataset`) and the signed
`PUT /uploads/{storage_key}` the emulator serves itself.

Owns both handlers. The PUT needs no API key (the signature is the authority, as with cloud
storage); it streams the body to a file chunk by chunk (never whole in memory), refuses more
than the seed's `uploads.max_bytes` with 413 PAYLOAD_TOO_LARGE and keeps nothing of a broken or
oversized transfer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from ...web.rawasgi import RawRoute
from ..core.access import require_scope
from ..core.datasets import iso
from ..core.errors import InvalidRequest, PayloadTooLarge
from ..core.uploads import PURPOSES, Upload, UploadEvent, apply
from .common import Call, Ops, Reply, route

CHUNK_IDLE_SECONDS = 60.0


async def presign(call: Call) -> Reply:
    ops = call.ops
    purpose = call.query("purpose") or "match"
    if purpose not in PURPOSES:
        raise InvalidRequest(
            "INVALID_REQUEST", "purpose must be match or dataset.", {"field": "purpose"}
        )
    needed = "datasets" if purpose == "dataset" else "jobs"
    require_scope(call.key.key, needed)
    now = ops.clock.now()
    storage_key = ops.ids.new("sk")
    expires = math.floor(now + ops.seed.upload_url_ttl)
    upload = Upload(
        storage_key=storage_key,
        purpose=purpose,
        key_id=call.key.key.key_id,
        created_at=now,
        expires_at=expires,
        path=ops.engine.workdir / f"{storage_key}.upload",
    )
    ops.state.uploads.add(upload)
    signature = ops.state.presigner.sign(storage_key, expires)
    url = f"{ops.base_url()}/uploads/{storage_key}?expires={expires}&signature={signature}"
    call.audit("upload.presign", storage_key)
    return Reply(
        201,
        {
            "upload_url": url,
            "storage_key": storage_key,
            "method": "PUT",
            "purpose": purpose,
            "expires_at": iso(expires),
            "max_bytes": ops.seed.upload_max_bytes,
        },
    )


async def put(call: Call) -> Reply:
    ops = call.ops
    raw = call.raw
    storage_key = call.params["storage_key"]
    ops.state.presigner.verify(
        storage_key, call.query("expires"), call.query("signature"), ops.clock.now()
    )
    upload = ops.state.uploads.get(storage_key)
    limit = ops.seed.upload_max_bytes
    declared = raw.content_length()
    if declared is not None and declared > limit:
        raise PayloadTooLarge(
            "PAYLOAD_TOO_LARGE", f"Uploads are limited to {limit} bytes.", {"limit_bytes": limit}
        )
    apply(upload, UploadEvent.BEGIN, ops.clock.now())
    size = 0
    finished = False
    try:
        async with await trio.open_file(upload.path, "wb") as sink:
            more = True
            while more:
                chunk, more = await raw.receive_chunk(CHUNK_IDLE_SECONDS)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(
                        "PAYLOAD_TOO_LARGE",
                        f"Uploads are limited to {limit} bytes.",
                        {"limit_bytes": limit},
                    )
                if chunk:
                    await sink.write(chunk)
        if size == 0:
            raise InvalidRequest("INVALID_FILE", "The uploaded file is empty.", {})
        apply(upload, UploadEvent.FINISH, ops.clock.now(), size=size)
        finished = True
    finally:
        if not finished:
            apply(upload, UploadEvent.BREAK, ops.clock.now())
            with trio.CancelScope(shield=True):
                await trio.Path(upload.path).unlink(missing_ok=True)
    call.audit("upload.put", storage_key)
    return Reply(200, {"storage_key": storage_key, "size": size, "status": "uploaded"})


def routes(ops_of: Callable[[], Ops], body_limit: int) -> list[RawRoute]:
    del body_limit
    return [
        route(ops_of, "POST", "/api/v2/uploads/presign", presign, scope=None,
              idempotent=True, body_limit=64 * 1024,
              summary="A presigned upload URL (purpose=match|dataset)"),
        route(ops_of, "PUT", "/uploads/{storage_key}", put, scope=None, auth=False,
              summary="Upload a file to a presigned URL (CSV, NDJSON or Parquet)"),
    ]  # fmt: skip
