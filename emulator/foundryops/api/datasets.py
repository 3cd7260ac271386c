"""Dataset routes ("Labs"): create, list, read, append (records or an uploaded file), activate,
and the download of reject artifacts.

Owns the handlers and the JSON of datasets, snapshots and append reports (serializers sit
here, beside the routes). A file append parses the upload in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from ...web.rawasgi import RawRequest, RawRoute
from ..core.artifacts import Artifact
from ..core.datasets import AppendReport, Dataset, check_rows, iso
from ..core.errors import InvalidRequest, PayloadTooLarge
from ..core.files import detect_format, read_batches
from .common import Call, Ops, Reply, route

MAX_FILE_APPEND_ROWS = 2_000_000


def dataset_json(ops: Ops, dataset: Dataset) -> dict[str, Any]:
    return {
        "dataset_id": dataset.dataset_id,
        "name": dataset.name,
        "schema": dataset.schema.to_json(),
        "created_at": iso(dataset.created_at),
        "active_snapshot_id": dataset.active_snapshot_id,
        "snapshots": [
            {
                "snapshot_id": sid,
                "records": ops.state.datasets.snapshots[sid].record_count,
                "created_at": iso(ops.state.datasets.snapshots[sid].created_at),
            }
            for sid in dataset.snapshot_ids
        ],
    }


def report_json(report: AppendReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "snapshot_id": report.snapshot_id,
        "accepted": report.accepted,
        "rejected": report.rejected,
        "coercions": report.coercions,
        "null_pct": report.null_pct,
    }
    if report.rejects_artifact_id is not None:
        out["rejects_url"] = f"/api/v2/artifacts/{report.rejects_artifact_id}"
    return out


async def create(call: Call) -> Reply:
    body = call.json()
    dataset = call.ops.state.datasets.create(
        body.get("name"), body.get("schema"), call.key.key.key_id, call.ops.clock.now()
    )
    call.audit("dataset.create", dataset.dataset_id)
    return Reply(201, dataset_json(call.ops, dataset))


async def list_all(call: Call) -> Reply:
    datasets = call.ops.state.datasets.datasets.values()
    return Reply(200, {"datasets": [dataset_json(call.ops, d) for d in datasets]})


async def read(call: Call) -> Reply:
    dataset = call.ops.state.datasets.get(call.params["dataset_id"])
    return Reply(200, dataset_json(call.ops, dataset))


async def append(call: Call) -> Reply:
    ops = call.ops
    dataset_id = call.params["dataset_id"]
    body = call.json()
    dataset = ops.state.datasets.get(dataset_id)
    strict = body.get("strict", False)
    if not isinstance(strict, bool):
        raise InvalidRequest("INVALID_REQUEST", "strict must be a boolean.", {"field": "strict"})
    if "source_key" in body:
        upload = ops.state.uploads.uploaded(body["source_key"], call.key.key.key_id, "dataset")
        schema = dataset.schema

        def parse() -> Any:
            fmt = detect_format(upload.path)
            records: list[dict[str, Any]] = []
            for batch in read_batches(upload.path, fmt):
                records.extend(batch)
                if len(records) > MAX_FILE_APPEND_ROWS:
                    raise PayloadTooLarge(
                        "PAYLOAD_TOO_LARGE",
                        f"A file append takes at most {MAX_FILE_APPEND_ROWS} rows.",
                        {"limit": MAX_FILE_APPEND_ROWS},
                    )
            return check_rows(schema, records)

        checked = await trio.to_thread.run_sync(parse)
        report = ops.state.datasets.commit(dataset, checked, ops.clock.now(), strict=strict)
    else:
        # Checking up to 10,000 records takes tens of milliseconds: a worker thread does it.
        records = ops.state.datasets.records_of(body.get("records"))
        checked = await trio.to_thread.run_sync(check_rows, dataset.schema, records)
        report = ops.state.datasets.commit(dataset, checked, ops.clock.now(), strict=strict)
    ops.state.ledger.charge(
        call.key.key.key_id, call.key.key.org, "dataset_append_row", report.accepted
    )
    call.audit("dataset.append", f"{dataset_id}/{report.snapshot_id}")
    return Reply(201, report_json(report))


async def activate(call: Call) -> Reply:
    ops = call.ops
    body = call.json()
    dataset = ops.state.datasets.activate(call.params["dataset_id"], body.get("snapshot_id"))
    snapshot = ops.state.datasets.snapshot(dataset.active_snapshot_id or "")
    ops.engine.warm_nowait(snapshot)
    call.audit("dataset.activate", f"{dataset.dataset_id}/{dataset.active_snapshot_id}")
    return Reply(
        200,
        {
            "dataset_id": dataset.dataset_id,
            "active_snapshot_id": dataset.active_snapshot_id,
            "records": snapshot.record_count,
        },
    )


def artifact_stream(artifact: Artifact) -> Any:
    async def stream(raw: RawRequest, headers: list[tuple[bytes, bytes]]) -> None:
        extra = [
            (b"content-type", artifact.content_type.encode()),
            (
                b"content-disposition",
                f'attachment; filename="{artifact.filename}"'.encode("latin-1"),
            ),
        ]
        if artifact.data is not None:
            await raw.respond(200, artifact.data, [*headers, *extra])
            return
        assert artifact.path is not None
        size = artifact.size
        await raw.start(200, [*headers, *extra, (b"content-length", str(size).encode())])
        async with await trio.open_file(artifact.path, "rb") as source:
            while True:
                chunk = await source.read(256 * 1024)
                if not chunk:
                    break
                await raw.send_body(chunk, more=True)
        await raw.send_body(b"", more=False)

    return stream


async def download(call: Call) -> Reply:
    artifact = call.ops.state.artifacts.get(call.params["artifact_id"], call.ops.clock.now())
    return Reply(200, stream=artifact_stream(artifact))


def routes(ops_of: Callable[[], Ops], body_limit: int) -> list[RawRoute]:
    base = "/api/v2/datasets"
    return [
        route(ops_of, "POST", base, create, scope="datasets", idempotent=True,
              body_limit=body_limit, summary="Create a dataset with a schema"),
        route(ops_of, "GET", base, list_all, scope="datasets", summary="List datasets"),
        route(ops_of, "GET", base + "/{dataset_id}", read, scope="datasets",
              summary="A dataset with its snapshots"),
        route(ops_of, "POST", base + "/{dataset_id}/append", append, scope="datasets",
              idempotent=True, body_limit=body_limit,
              summary="Append records (or an uploaded file): a new snapshot and a DQ summary"),
        route(ops_of, "POST", base + "/{dataset_id}/activate", activate, scope="datasets",
              idempotent=True, body_limit=body_limit, summary="Activate a snapshot"),
        route(ops_of, "GET", "/api/v2/artifacts/{artifact_id}", download, scope=None,
              summary="Download an artifact (rejected rows as NDJSON.gz, job results)"),
    ]  # fmt: skip
