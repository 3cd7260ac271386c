"""The FoundryOps API over real HTTP: errors, ids, idempotency, limits, credits, scopes,
uploads, retention, metrics and the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from foundryops_support import API_KEY, AUTH, client, seed_with

from emulator.platform.clock import ManualClock

RECORD = {"snapshot_id": "dss_snapshot1", "record": {"company_name": "Acme", "domain": "acme.com"}}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "correlation_id", "request_id"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("GET", "/api/v2/datasets", None, {}, 401, "UNAUTHORIZED"),
        ("GET", "/api/v2/datasets", None, {"Authorization": "Bearer nope_nope"}, 401,
         "UNAUTHORIZED"),
        ("POST", "/api/v2/datasets", {"name": "x", "schema": {"a": "varchar"}}, AUTH, 400,
         "INVALID_SCHEMA"),
        ("GET", "/api/v2/datasets/ds_missing", None, AUTH, 404, "DATASET_NOT_FOUND"),
        ("POST", "/api/v2/datasets/ds_missing/append", {"records": [{}]}, AUTH, 404,
         "DATASET_NOT_FOUND"),
        ("POST", "/api/v2/match/record", {**RECORD, "snapshot_id": "dss_nope"}, AUTH, 404,
         "SNAPSHOT_NOT_FOUND"),
        ("POST", "/api/v2/match/record", {**RECORD, "options": {"profile": "x"}}, AUTH, 400,
         "INVALID_REQUEST"),
        ("POST", "/api/v2/match/record", {"snapshot_id": "dss_snapshot1", "record": {"x": 1}},
         AUTH, 400, "INVALID_REQUEST"),
        ("POST", "/api/v2/match/batch",
         {"snapshot_id": "dss_snapshot1", "records": [{"company_name": "a"}] * 101}, AUTH, 413,
         "PAYLOAD_TOO_LARGE"),
        ("GET", "/api/v2/jobs/job_nope", None, AUTH, 404, "JOB_NOT_FOUND"),
        ("GET", "/api/v2/artifacts/art_nope", None, AUTH, 404, "ARTIFACT_NOT_FOUND"),
        ("POST", "/api/v2/uploads/presign?purpose=other", None, AUTH, 400, "INVALID_REQUEST"),
        ("POST", "/api/v2/match/files", {"snapshot_id": "dss_snapshot1", "source_key": "sk_x"},
         AUTH, 404, "UPLOAD_NOT_FOUND"),
        ("GET", "/api/v2/unknown", None, AUTH, 404, "NOT_FOUND"),
        ("DELETE", "/api/v2/datasets", None, AUTH, 405, "METHOD_NOT_ALLOWED"),
    ],
)  # fmt: skip
async def test_errors_in_the_documented_shape(
    fo: Any, method: str, path: str, body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    async with client(fo, headers=headers) as http:
        response = await http.request(method, path, json=body)
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert API_KEY not in response.text


async def test_invalid_schema_details_and_malformed_bodies(fo: Any) -> None:
    async with client(fo) as http:
        created = await http.post(
            "/api/v2/datasets", json={"name": "d", "schema": {"customer_id": "int"}}
        )
        dataset = created.json()["dataset_id"]
        bad = await http.post(
            f"/api/v2/datasets/{dataset}/append", json={"records": [{"customer_id": "abc"}]}
        )
        broken = await http.post("/api/v2/datasets", content=b"{not json")
        huge = await http.post(
            "/api/v2/match/batch",
            content=b'{"records": ["' + b"x" * (600 * 1024) + b'"]}',
        )
    error = error_of(bad)
    assert error["code"] == "INVALID_SCHEMA"
    assert error["message"] == "Field 'customer_id' expected int, got string"
    assert {k: error["details"][k] for k in ("field", "expected", "received")} == {
        "field": "customer_id", "expected": "int", "received": "string",
    }  # fmt: skip
    assert error_of(broken)["code"] == "INVALID_REQUEST"
    assert huge.status_code == 413
    assert error_of(huge)["code"] == "PAYLOAD_TOO_LARGE"


async def test_traceparent_becomes_the_correlation_id(fo: Any) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with client(fo) as http:
        traced = await http.get(
            "/api/v2/datasets/ds_missing",
            headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"},
        )
        plain = await http.get("/api/v2/datasets")
    assert traced.json()["correlation_id"] == trace
    assert traced.headers["x-correlation-id"] == trace
    assert plain.headers["x-request-id"].startswith("req_")
    assert plain.headers["x-request-id"] != traced.headers["x-request-id"]


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-Idempotency-Key"])
async def test_idempotency_replays_and_refuses(fo: Any, header: str) -> None:
    batch = {"snapshot_id": "dss_snapshot1", "records": [{"company_name": "Acme"}]}
    async with client(fo) as http:
        first = await http.post("/api/v2/match/batch", json=batch, headers={header: "k-1"})
        again = await http.post("/api/v2/match/batch", json=batch, headers={header: "k-1"})
        other = await http.post(
            "/api/v2/match/batch", json={**batch, "records": [{"company_name": "Globex"}]},
            headers={header: "k-1"},
        )  # fmt: skip
        fresh = await http.post("/api/v2/match/batch", json=batch, headers={header: "k-2"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert error_of(other)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert fresh.json()["job_id"] != first.json()["job_id"]


async def test_rate_limits_per_key_with_retry_after(start_emulator: Any) -> None:
    seed = seed_with(
        tiers={"tiny": {"requests_per_minute": 60, "burst": 2, "max_concurrent_jobs": 1}},
        api_keys=[
            {"key": "fo_tiny_key_1", "tier": "tiny"},
            {"key": "fo_other_key", "tier": "tiny"},
        ],
    )
    running = await start_emulator(seed, services=("foundryops",), clock=ManualClock())
    tiny = {"Authorization": "Bearer fo_tiny_key_1"}
    async with client(running, headers=tiny) as http:
        answers = [await http.get("/api/v2/datasets") for _ in range(3)]
        other = await http.get("/api/v2/datasets", headers={"Authorization": "Bearer fo_other_key"})
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["1", "0", "0"]
    assert answers[0].headers["x-ratelimit-limit"] == "60"
    limited = answers[2]
    assert error_of(limited)["code"] == "RATE_LIMIT"
    assert limited.headers["retry-after"] == "1"
    assert limited.headers["x-concurrency-limit"] == "1"
    assert limited.headers["x-queue-depth"] == "0"
    assert other.status_code == 200


async def test_credits_shadow_by_default_and_enforced_with_402(start_emulator: Any) -> None:
    seed = seed_with(
        api_keys=[
            {"key": "fo_paying_key", "id": "payer", "org": "acme"},
            {"key": "fo_shadow_key", "id": "shadow"},
        ],
        credits=[{"org": "acme", "balance": 1, "mode": "enforced"}],
    )
    running = await start_emulator(seed, services=("foundryops",))
    async with client(running, headers={"Authorization": "Bearer fo_paying_key"}) as http:
        paid = await http.post("/api/v2/match/record", json=RECORD)
        refused = await http.post("/api/v2/match/record", json=RECORD)
    async with client(running, headers={"Authorization": "Bearer fo_shadow_key"}) as http:
        shadow = [await http.post("/api/v2/match/record", json=RECORD) for _ in range(2)]
    assert paid.status_code == 200
    assert paid.headers["x-credits-remaining"] == "0"
    assert refused.status_code == 402
    assert error_of(refused)["code"] == "INSUFFICIENT_CREDITS"
    assert 'rel="payment"' in refused.headers["link"]
    assert [s.headers["x-credits-remaining-simulated"] for s in shadow] == ["999", "998"]
    assert "x-credits-remaining" not in shadow[0].headers


async def test_scopes_are_enforced(start_emulator: Any) -> None:
    seed = seed_with(api_keys=[{"key": "fo_jobs_only", "scopes": ["jobs"]}])
    running = await start_emulator(seed, services=("foundryops",))
    async with client(running, headers={"Authorization": "Bearer fo_jobs_only"}) as http:
        datasets = await http.get("/api/v2/datasets")
        callback = await http.post(
            "/api/v2/match/batch",
            json={"snapshot_id": "dss_snapshot1", "records": [{"company_name": "a"}],
                  "callback_url": "http://127.0.0.1:1/x"},
        )  # fmt: skip
        match = await http.post("/api/v2/match/record", json=RECORD)
    assert datasets.status_code == 403
    assert error_of(datasets)["details"]["required_scope"] == "datasets"
    assert callback.status_code == 403
    assert error_of(callback)["details"]["required_scope"] == "webhooks"
    assert match.status_code == 200


async def test_upload_urls_are_signed_expiring_and_bounded(start_emulator: Any) -> None:
    clock = ManualClock()
    seed = seed_with(uploads={"max_bytes": 1024, "url_ttl_seconds": 60})
    running = await start_emulator(seed, services=("foundryops",), clock=clock)
    async with client(running) as http:
        presigned = [
            (await http.post("/api/v2/uploads/presign?purpose=match")).json() for _ in range(4)
        ]
        url = presigned[0]["upload_url"]
        tampered = await http.put(url.replace("signature=", "signature=0"), content=b"a\n")
        big = await http.put(presigned[1]["upload_url"], content=b"x" * 2048)
        ok = await http.put(presigned[2]["upload_url"], content=b"company_name\nAcme\n")
        twice = await http.put(presigned[2]["upload_url"], content=b"company_name\nAcme\n")
        clock.advance(61)
        late = await http.put(presigned[3]["upload_url"], content=b"company_name\nAcme\n")
    assert tampered.status_code == 403
    assert error_of(tampered)["code"] == "INVALID_SIGNATURE"
    assert big.status_code == 413
    assert error_of(big)["code"] == "PAYLOAD_TOO_LARGE"
    assert ok.status_code == 200
    assert twice.status_code == 409
    assert late.status_code == 403
    assert error_of(late)["code"] == "UPLOAD_URL_EXPIRED"
    assert "signature=" not in str(running.emulator.services["foundryops"].describe())


async def test_reject_artifacts_download_and_expire_after_24_hours(start_emulator: Any) -> None:
    clock = ManualClock()
    running = await start_emulator(seed_with(), services=("foundryops",), clock=clock)
    async with client(running) as http:
        created = await http.post("/api/v2/datasets", json={"name": "d", "schema": {"n": "int"}})
        appended = await http.post(
            f"/api/v2/datasets/{created.json()['dataset_id']}/append",
            json={"records": [{"n": 1}, {"n": "two"}]},
        )
        url = appended.json()["rejects_url"]
        fresh = await http.get(url)
        clock.advance(24 * 3600)
        expired = await http.get(url)
    import gzip
    import json

    assert appended.json()["rejected"] == 1
    lines = [json.loads(x) for x in gzip.decompress(fresh.content).splitlines()]
    assert lines[0]["reasons"][0]["received"] == "string"
    assert expired.status_code == 410
    assert error_of(expired)["code"] == "ARTIFACT_EXPIRED"


async def test_metrics_and_audit_trail(fo: Any) -> None:
    async with client(fo) as http:
        await http.post("/api/v2/datasets", json={"name": "d", "schema": {"n": "int"}})
        await http.post("/api/v2/match/record", json=RECORD)
        metrics = await http.get("/metrics")
        audit = await http.get("/_emulate/foundryops/audit")
        decisions = await http.get("/_emulate/foundryops/decisions")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'foundryops_requests_total{method="POST",route="/api/v2/match/record",status="200"}' in (
        metrics.text
    )
    events = audit.json()["events"]
    assert [e["action"] for e in events] == ["dataset.create"]
    assert events[0]["key_id"] == "dev"
    assert API_KEY not in audit.text
    assert decisions.json()["decisions"][0]["snapshot_id"] == "dss_snapshot1"


async def test_match_record_over_http2(fo: Any) -> None:
    async with client(fo, http2=True) as http:
        response = await http.post("/api/v2/match/record", json=RECORD)
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200
    assert response.json()["matches"][0]["record"]["company_name"] == "Acme Inc"


def test_the_starter_block_passes_check_and_the_default_seed_runs_the_examples() -> None:
    import yaml

    from emulator.foundryops.service import STARTER_BLOCK, FoundryOpsService
    from emulator.platform.seeds import seed_from_mapping

    service = FoundryOpsService()
    parsed = seed_from_mapping(yaml.safe_load(STARTER_BLOCK), [service]).blocks["foundryops"]
    summary = service.summary(parsed)
    assert summary[0] == "api keys: 1"
    assert any(d.snapshot_id == "dss_snapshot1" for d in parsed.datasets)
