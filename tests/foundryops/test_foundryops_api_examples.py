"""Every curl example of the source (seed-entity-resolution-api.txt), run with real curl against
the emulator on port 0: only the base URL, the key and the placeholder ids (`ds_01H8...`,
`dss_...`, `sk_...`, `job_01H8X9Y2Z3...`, taken from the answers before) are substituted."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import trio
from foundryops_support import API_KEY, AUTH, client

SOURCE = "https://api.foundryops.io"
# `uuidgen` is not installed everywhere; the examples call it, so the shell gets one.
PRELUDE = "uuidgen() { cat /proc/sys/kernel/random/uuid; }\n"


async def curl(
    running: Any, command: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """Run one example with `curl -i -s` and return status, headers and the JSON body."""
    base = running.url("foundryops")
    text = command.replace(SOURCE, base).replace("curl ", "curl -s -i ", 1)
    result = await trio.run_process(
        ["bash", "-c", PRELUDE + text],
        capture_stdout=True,
        capture_stderr=True,
        cwd=cwd,
        env={**os.environ, "API_KEY": API_KEY, **(env or {})},
    )
    text = result.stdout.decode()
    head, _, body = text.partition("\r\n\r\n")
    while head.split()[1] == "100":  # curl -T waits for `100 Continue` first
        head, _, body = body.partition("\r\n\r\n")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, json.loads(body) if body.strip() else None


CREATE = """curl -X POST "https://api.foundryops.io/api/v2/datasets" \\
-H "Authorization: Bearer $API_KEY" \\
-H "Content-Type: application/json" \\
-d '{
"name": "Customer Master Data",
"schema": {
"customer_id": "int",
"company_name": "string",
"email": "string",
"created_at": "timestamp"
}
}'"""

APPEND = """curl -X POST "https://api.foundryops.io/api/v2/datasets/ds_01H8.../append" \\
-H "Authorization: Bearer $API_KEY" \\
-H "Content-Type: application/json" \\
-d '{
"records": [
{"customer_id": 1, "company_name": "Acme", "email": "info@acme.com", "created_at": "2024-01-01T00:00:00Z"},
{"customer_id": 2, "company_name": "Globex", "email": "info@globex.com", "created_at": "2024-01-02T00:00:00Z"}
]
}'"""  # noqa: E501

ACTIVATE = """curl -X POST "https://api.foundryops.io/api/v2/datasets/ds_01H8.../activate" \\
-H "Authorization: Bearer $API_KEY" \\
-H "Content-Type: application/json" \\
-d '{"snapshot_id": "dss_..."}'"""

MATCH_RECORD = """curl -X POST "https://api.foundryops.io/api/v2/match/record" \\
-H "Authorization: Bearer $API_KEY" \\
-H "Content-Type: application/json" \\
-H "Idempotency-Key: rec-$(uuidgen)" \\
-d '{
"snapshot_id": "dss_snapshot1",
"record": {
"company_name": "Acme Inc",
"domain": "acme.com"
},
"options": {
"profile": "balanced",
"threshold": 0.8,
"top_n": 5,
"return_explanations": true
}
}'"""

BATCH = """curl -X POST "https://api.foundryops.io/api/v2/match/batch" \\
-H "Authorization: Bearer $API_KEY" \\
-H "Content-Type: application/json" \\
-H "Idempotency-Key: batch-$(uuidgen)" \\
-d '{
"snapshot_id": "dss_snapshot1",
"records": [
{"company_name": "Acme Inc", "domain": "acme.com"},
{"company_name": "Globex Corp", "domain": "globex.com"}
],
"options": {"profile": "balanced", "threshold": 0.7},
"callback_url": "https://your-app.com/webhook/match-complete"
}'"""

PRESIGN = """curl -X POST "https://api.foundryops.io/api/v2/uploads/presign?purpose=match" \\
-H "Authorization: Bearer $API_KEY\""""

UPLOAD = """curl -X PUT "$UPLOAD_URL" -T leads.csv"""

FILES = """curl -X POST "https://api.foundryops.io/api/v2/match/files" \\
-H "Authorization: Bearer $API_KEY" \\
-H "Content-Type: application/json" \\
-d '{
"snapshot_id": "dss_snapshot1",
"source_key": "sk_...",
"options": {"profile": "balanced"},
"output_format": "parquet"
}'"""

POLL = """curl "https://api.foundryops.io/api/v2/jobs/job_01H8X9Y2Z3..." \\
-H "Authorization: Bearer $API_KEY\""""


async def test_every_curl_example_gets_the_documented_shape(fo: Any, tmp_path: Path) -> None:
    seen: list[str] = []

    async def run(command: str, env: dict[str, str] | None = None) -> tuple[int, Any]:
        status, headers, body = await curl(fo, command, tmp_path, env)
        assert headers["x-request-id"].startswith("req_")
        seen.append(json.dumps(headers) + json.dumps(body))
        return status, body

    status, created = await run(CREATE)
    assert status == 201
    assert created["dataset_id"].startswith("ds_")
    assert created["name"] == "Customer Master Data"
    assert created["schema"]["customer_id"] == "int"
    assert created["created_at"].endswith("Z")
    dataset_id = created["dataset_id"]

    status, appended = await run(APPEND.replace("ds_01H8...", dataset_id))
    assert status == 201
    assert appended["snapshot_id"].startswith("dss_")
    assert (appended["accepted"], appended["rejected"]) == (2, 0)
    assert appended["coercions"] == {"timestamp": 2}
    assert appended["null_pct"]["email"] == 0.0

    status, activated = await run(
        ACTIVATE.replace("ds_01H8...", dataset_id).replace("dss_...", appended["snapshot_id"])
    )
    assert status == 200
    assert activated["active_snapshot_id"] == appended["snapshot_id"]

    status, matched = await run(MATCH_RECORD)
    assert status == 200
    best = matched["matches"][0]
    assert best["record"]["domain"] == "acme.com"
    assert best["confidence"] == "high"
    assert {r["code"] for r in best["reasons"]} >= {"exact_domain", "stripped_suffix"}
    assert all(m["score"] >= 0.8 for m in matched["matches"])
    assert len(matched["matches"]) <= 5

    status, batch = await run(BATCH)
    assert status == 202
    assert batch["status"] == "queued"
    assert batch["poll_url"] == f"/api/v2/jobs/{batch['job_id']}"
    assert batch["results_url"] == f"/api/v2/jobs/{batch['job_id']}/results"
    assert batch["job_id"].startswith("job_")

    status, presigned = await run(PRESIGN)
    assert status == 201
    assert presigned["storage_key"].startswith("sk_")
    (tmp_path / "leads.csv").write_text(
        "company_name,domain\nAcme Inc,acme.com\nGlobex Corporation,globex.com\nNobody,x.org\n"
    )
    status, uploaded = await run(UPLOAD, {"UPLOAD_URL": presigned["upload_url"]})
    assert status == 200
    assert uploaded["size"] > 0

    status, file_job = await run(FILES.replace("sk_...", presigned["storage_key"]))
    assert status == 202
    assert set(file_job) == {"job_id", "status", "poll_url", "results_url"}

    instance = fo.emulator.services["foundryops"]
    await instance.engine.wait_job_finished(file_job["job_id"])
    status, polled = await run(POLL.replace("job_01H8X9Y2Z3...", file_job["job_id"]))
    assert status == 200
    assert polled["job_id"] == file_job["job_id"]
    assert polled["status"] == "completed"
    assert polled["progress"] == {"processed": 3, "total": 3, "percentage": 100.0}
    assert polled["eta_seconds"] == 0

    # The batch's callback host is not allowed by the default seed: nothing is sent.
    delivery = await instance.engine.wait_delivery_finished(batch["job_id"])
    assert delivery.status.value == "blocked"
    assert delivery.attempts == 0

    # No answer ever carried the API key or the callback secret.
    everything = "\n".join(seen)
    assert API_KEY not in everything
    assert instance.seed.callback_secret not in everything

    async with client(fo) as http:
        results = await http.get(polled["results_url"])
    assert results.status_code == 200
    assert results.content.startswith(b"PAR1")
    assert AUTH  # the header the curl examples sent is the one the fixtures use
