"""Assets: upload raw bytes (read chunk by chunk into the bounded store) and download them.
With `--state-file`, each upload's bytes are also written beside it (assetfiles.py) so they
survive a restart.

Imports trio, the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

import trio

from ...asgi import Headers
from ..core.errors import PayloadTooLarge
from ..core.tenancy import DEFAULT_ORG_ID
from . import serialize
from .envelope import Answer, Call
from .routes import FabricApi, Route, drain, log

IDLE_SECONDS = 30.0


def routes(api: FabricApi) -> list[Route]:
    plane = api.plane

    async def upload(call: Call) -> Answer:
        query = call.query()
        caller = call.principal()
        org = query.get("organization_id") or caller.key_org or DEFAULT_ORG_ID
        content_type = query.get("content_type") or (
            call.raw.header(b"content-type") or "application/octet-stream"
        )
        call.name_org(org)
        pending = plane.begin_upload(caller, org, query.get("filename"), content_type.strip())
        declared = call.raw.content_length()
        if declared is not None and declared > plane.assets.max_asset_bytes:
            raise PayloadTooLarge(f"asset exceeds {plane.assets.max_asset_bytes} bytes")
        more = True
        while more:
            chunk, more = await call.raw.receive_chunk(IDLE_SECONDS)
            pending.add(chunk)
        asset = plane.finish_upload(caller, pending)
        files = api.asset_files
        if files is not None:
            # Written once, off the event loop, before the answer: a state file saved after
            # this upload names bytes that are on disk. A failure costs only the asset's
            # survival across a restart (it is saved only once written), not the upload.
            try:
                await trio.to_thread.run_sync(files.write, asset)
            except OSError as error:
                log.error("cannot keep asset %s in %s: %s", asset.id, files.directory, error)
        return Answer(201, serialize.asset(asset), {"self": f"/v1/assets/{asset.id}"})

    async def download(call: Call) -> None:
        await drain(call)
        asset = plane.get_asset(call.principal(), call.raw.params["id"])
        filename = asset.filename.replace('"', "").replace("\r", "").replace("\n", "")
        headers: Headers = [
            (b"content-type", asset.content_type.encode("latin-1", "replace")),
            (b"content-length", str(asset.size_bytes).encode()),
            (
                b"content-disposition",
                f'attachment; filename="{filename}"'.encode("latin-1", "replace"),
            ),
            (b"x-request-id", call.request_id.encode()),
        ]
        await call.raw.start(200, headers)
        for chunk in asset.iter_bytes():
            await call.raw.send_body(chunk, more=True)
        await call.raw.send_body(b"", more=False)

    return [
        Route("POST", "/v1/assets", upload, summary="Upload asset (raw bytes)"),
        Route("GET", "/v1/assets/{id}", download, summary="Download asset"),
        Route("GET", "/v1/assets/{id}/download", download, summary="Download asset (alias)"),
    ]
