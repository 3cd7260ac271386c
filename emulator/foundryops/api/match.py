"""Match routes: a record now (`/match/record`), a batch job (`/match/batch`, at most 100
records and 512 KB), and a file job (`/match/files`, from an upload).

Owns the handlers and the JSON of match answers. Credits are charged before the work (402 and
nothing done when an enforced balance cannot pay); a file job is charged per row once its rows
are counted. Matching a record runs on the loop (a few candidates, bounded); batches and files
run in the engine's worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...web.rawasgi import RawRoute
from ..core.audit import Decision
from ..core.batch import match_json, records_of
from ..core.errors import InvalidRequest, PayloadTooLarge
from ..core.files import FORMATS
from ..core.jobs import Job
from ..core.matcher import MatchOptions
from ..core.normalize import MatchKey, match_key
from ..core.state import MAX_BATCH_RECORDS
from ..engine import job_json
from .common import Call, Ops, Reply, route

BATCH_BODY_LIMIT = 512 * 1024


def _record(value: object, field: str) -> dict[str, object]:
    return _checked(value, field)[0]


def _checked(value: object, field: str) -> tuple[dict[str, object], MatchKey]:
    """The record and its normalised key; 400 unless it has a name or a domain."""
    if not isinstance(value, dict):
        raise InvalidRequest("INVALID_REQUEST", f"{field} must be an object.", {"field": field})
    key = match_key(value)
    if key.name is None and key.domain is None:
        raise InvalidRequest(
            "INVALID_REQUEST",
            f"{field} needs a company name (company_name, name, account_name, company, "
            "organization) or a domain (domain, website, url, email).",
            {"field": field},
        )
    return value, key


async def match_record(call: Call) -> Reply:
    ops = call.ops
    body = call.json()
    _, record_key = _checked(body.get("record"), "record")
    options = MatchOptions.from_json(body.get("options"))
    snapshot = ops.state.resolve_snapshot(body)
    key = call.key.key
    charge = ops.state.ledger.charge(key.key_id, key.org, "match_record", 1)
    ops.metrics.meter_credits(charge.mode.value, charge.cost)
    index = ops.engine.index_nowait(snapshot) or await ops.engine.index_for(snapshot)
    matches = index.match_normalised(record_key, options)
    record_at = records_of(snapshot)
    ops.metrics.count_match(options.profile.name)
    ops.state.decisions.record(
        Decision(
            at=ops.clock.now(),
            request_id=call.request_id,
            key_id=key.key_id,
            snapshot_id=snapshot.snapshot_id,
            profile=options.profile.name,
            threshold=options.threshold,
            match_count=len(matches),
            top_score=matches[0].score if matches else None,
        )
    )
    return Reply(
        200,
        {
            "request_id": call.request_id,
            "snapshot_id": snapshot.snapshot_id,
            "profile": options.profile.name,
            "threshold": options.threshold,
            "matched": bool(matches),
            "matches": [
                match_json(m, record_at(m.row), options.return_explanations) for m in matches
            ],
        },
    )


def _job_reply(ops: Ops, job: Job) -> Reply:
    full = job_json(job, ops.clock.now())
    return Reply(
        202,
        {
            "job_id": job.job_id,
            "status": full["status"],
            "poll_url": full["poll_url"],
            "results_url": full["results_url"],
        },
        {"Location": full["poll_url"]},
    )


async def match_batch(call: Call) -> Reply:
    ops = call.ops
    body = call.json()
    records = body.get("records")
    if not isinstance(records, list) or not records:
        raise InvalidRequest(
            "INVALID_REQUEST", "records must be a non-empty array of objects.",
            {"field": "records"},
        )  # fmt: skip
    if len(records) > MAX_BATCH_RECORDS:
        raise PayloadTooLarge(
            "PAYLOAD_TOO_LARGE",
            f"A batch takes at most {MAX_BATCH_RECORDS} records; this one has {len(records)}. "
            "Use /api/v2/match/files for more.",
            {"limit": MAX_BATCH_RECORDS, "received": len(records)},
        )
    checked = [_record(r, f"records[{i}]") for i, r in enumerate(records)]
    options = MatchOptions.from_json(body.get("options"))
    snapshot = ops.state.resolve_snapshot(body)
    callback = ops.state.callback_for(call.key, body)
    ops.state.check_job_slot(call.key)
    key = call.key.key
    charge = ops.state.ledger.charge(key.key_id, key.org, "match_batch_record", len(checked))
    ops.metrics.meter_credits(charge.mode.value, charge.cost)
    job = Job(
        job_id=ops.ids.new("job"),
        kind="match_batch",
        key_id=key.key_id,
        snapshot_id=snapshot.snapshot_id,
        created_at=ops.clock.now(),
        total=len(checked),
        options=options,
        callback_url=callback,
        credits_charged=charge.cost,
    )
    ops.engine.start_job_nowait(
        job, call.key.tier.max_concurrent_jobs, ops.engine.batch_work(snapshot, checked, options)
    )
    ops.metrics.count_job("match_batch")
    call.audit("job.submit", job.job_id)
    return _job_reply(ops, job)


async def match_files(call: Call) -> Reply:
    ops = call.ops
    body = call.json()
    key = call.key.key
    upload = ops.state.uploads.uploaded(body.get("source_key"), key.key_id, "match")
    output_format = body.get("output_format", "ndjson")
    if output_format not in FORMATS:
        raise InvalidRequest(
            "INVALID_REQUEST",
            f"output_format must be one of {', '.join(FORMATS)}.",
            {"field": "output_format"},
        )
    options = MatchOptions.from_json(body.get("options"))
    snapshot = ops.state.resolve_snapshot(body)
    callback = ops.state.callback_for(call.key, body)
    ops.state.check_job_slot(call.key)
    # Refuse now what could not pay for a single row; the full charge follows the row count.
    ops.state.ledger.require(key.key_id, key.org, "match_file_row", 1)

    def charge_rows(rows: int) -> Any:
        taken = ops.state.ledger.charge(key.key_id, key.org, "match_file_row", rows)
        ops.metrics.meter_credits(taken.mode.value, taken.cost)
        return taken

    job = Job(
        job_id=ops.ids.new("job"),
        kind="match_file",
        key_id=key.key_id,
        snapshot_id=snapshot.snapshot_id,
        created_at=ops.clock.now(),
        total=None,
        options=options,
        callback_url=callback,
        output_format=output_format,
        source_key=upload.storage_key,
    )
    ops.engine.start_job_nowait(
        job,
        call.key.tier.max_concurrent_jobs,
        ops.engine.file_work(snapshot, upload.path, options, output_format, charge_rows),
    )
    ops.metrics.count_job("match_file")
    call.audit("job.submit", job.job_id)
    return _job_reply(ops, job)


def routes(ops_of: Callable[[], Ops], body_limit: int) -> list[RawRoute]:
    return [
        route(ops_of, "POST", "/api/v2/match/record", match_record, scope="jobs",
              idempotent=True, body_limit=body_limit,
              summary="Match one record against a snapshot (synchronous)"),
        route(ops_of, "POST", "/api/v2/match/batch", match_batch, scope="jobs",
              idempotent=True, body_limit=BATCH_BODY_LIMIT,
              summary="Match up to 100 records (async job)"),
        route(ops_of, "POST", "/api/v2/match/files", match_files, scope="jobs",
              idempotent=True, body_limit=body_limit,
              summary="Match an uploaded file (async job)"),
    ]  # fmt: skip
