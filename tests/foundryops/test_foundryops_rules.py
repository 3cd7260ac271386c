"""Jobs, keys and scopes, token buckets, credits, idempotency, webhooks, uploads, audit (sync)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.foundryops.core import jobs, uploads, webhooks
from emulator.foundryops.core.access import DEFAULT_TIERS, ApiKey, KeyRing, require_scope
from emulator.foundryops.core.audit import Decision, DecisionLog
from emulator.foundryops.core.credits import Account, CreditMode, Ledger, Prices
from emulator.foundryops.core.errors import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    InvalidRequest,
    RateLimited,
    Unauthorized,
)
from emulator.foundryops.core.idempotency import Fingerprint, IdempotencyStore, StoredResponse
from emulator.foundryops.core.ratelimit import RateLimiter, check_job_slot

NOW = 1_800_000_000.0
J = jobs.JobStatus
E = jobs.JobEvent


def new_job() -> jobs.Job:
    return jobs.Job("job_1", "match_batch", "dev", "dss_1", NOW, 100, None)


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([E.START], J.RUNNING),
        ([E.START, E.COMPLETE], J.COMPLETED),
        ([E.START, E.FAIL], J.FAILED),
        ([E.FAIL], J.FAILED),
    ],
)
def test_job_transitions(events: list[jobs.JobEvent], final: jobs.JobStatus) -> None:
    job = new_job()
    for event in events:
        jobs.apply(job, event, NOW, error=jobs.JobError("X", "x"))
    assert job.status is final


@pytest.mark.parametrize(
    ("events", "illegal"),
    [
        ([], E.COMPLETE),
        ([E.START, E.COMPLETE], E.FAIL),
        ([E.START, E.COMPLETE], E.START),
        ([E.FAIL], E.START),
        ([E.START], E.START),
    ],
)
def test_illegal_job_transitions_raise_and_change_nothing(
    events: list[jobs.JobEvent], illegal: jobs.JobEvent
) -> None:
    job = new_job()
    for event in events:
        jobs.apply(job, event, NOW, error=jobs.JobError("X", "x"))
    before = (job.status, job.started_at, job.finished_at, job.error)
    with pytest.raises(Conflict):
        jobs.apply(job, illegal, NOW + 5, error=jobs.JobError("Y", "y"))
    assert (job.status, job.started_at, job.finished_at, job.error) == before


def test_progress_percentage_and_eta() -> None:
    job = new_job()
    assert jobs.eta_seconds(job, NOW) is None
    jobs.apply(job, E.START, NOW)
    jobs.record_progress(job, 42, NOW + 42)
    assert jobs.percentage(job) == 42.0
    assert jobs.eta_seconds(job, NOW + 42) == 58
    jobs.record_progress(job, 10, NOW + 43)  # never goes back
    assert job.processed == 42
    jobs.record_progress(job, 500, NOW + 44)  # never passes total
    assert job.processed == 100
    jobs.apply(job, E.COMPLETE, NOW + 45)
    assert (jobs.percentage(job), jobs.eta_seconds(job, NOW + 45)) == (100.0, 0)
    with pytest.raises(Conflict):
        jobs.record_progress(job, 1, NOW + 46)


KEY = ApiKey("dev", "fo_secret_key_1", frozenset({"jobs"}), "free", None)


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer ", "Bearer wrong_key_1", "fo_secret_key_1"],
)
def test_bad_credentials_are_unauthorized_and_never_echo_the_key(header: str | None) -> None:
    ring = KeyRing.of([KEY])
    with pytest.raises(Unauthorized) as caught:
        ring.authenticate(header)
    assert "fo_secret_key_1" not in str(caught.value)
    assert "wrong_key_1" not in str(caught.value)


def test_scopes() -> None:
    assert KeyRing.of([KEY]).authenticate("Bearer fo_secret_key_1") is KEY
    require_scope(KEY, "jobs")
    with pytest.raises(Forbidden):
        require_scope(KEY, "datasets")


def test_token_bucket_refuses_then_refills_on_the_clock() -> None:
    tier = DEFAULT_TIERS["free"]  # 60 per minute, burst 10
    limiter = RateLimiter()
    statuses = [limiter.take("dev", tier, NOW) for _ in range(tier.burst)]
    assert [s.remaining for s in statuses] == list(range(9, -1, -1))
    assert statuses[0].limit == 60
    with pytest.raises(RateLimited) as caught:
        limiter.take("dev", tier, NOW, queue_depth=3)
    assert (caught.value.retry_after, caught.value.queue_depth) == (1, 3)
    assert caught.value.concurrency_limit == tier.max_concurrent_jobs
    assert limiter.take("other", tier, NOW).remaining == 9  # buckets are per key
    assert limiter.take("dev", tier, NOW + 1).remaining == 0
    assert limiter.take("dev", tier, NOW + 60).remaining == tier.burst - 1


@pytest.mark.parametrize(
    ("queued", "running", "refused"), [(0, 0, False), (1, 1, False), (2, 1, True)]
)
def test_job_slots_per_tier(queued: int, running: int, refused: bool) -> None:
    tier = DEFAULT_TIERS["free"]  # 1 running, 2 queued
    if refused:
        with pytest.raises(RateLimited):
            check_job_slot(tier, queued, running)
    else:
        check_job_slot(tier, queued, running)


def test_shadow_mode_meters_without_refusing() -> None:
    ledger = Ledger(Prices(match_record=2.0), CreditMode.SHADOW, 3.0)
    charges = [ledger.charge("dev", None, "match_record", 1) for _ in range(3)]
    assert [c.remaining for c in charges] == [1.0, -1.0, -3.0]
    assert charges[0].mode is CreditMode.SHADOW


def test_enforced_mode_refuses_and_debits_nothing() -> None:
    ledger = Ledger(Prices(), CreditMode.ENFORCED, 1.5)
    assert ledger.charge("dev", None, "match_record", 1).remaining == 0.5
    with pytest.raises(InsufficientCredits) as caught:
        ledger.charge("dev", None, "match_record", 1)
    assert caught.value.details == {"required": 1.0, "balance": 0.5, "operation": "match_record"}
    assert ledger.balance("dev", None).balance == 0.5


def test_org_accounts_are_shared_by_their_keys() -> None:
    ledger = Ledger(Prices(), CreditMode.SHADOW, 0.0)
    ledger.accounts["org:acme"] = Account("org:acme", CreditMode.ENFORCED, 2.0)
    ledger.charge("a", "acme", "match_record", 1)
    ledger.charge("b", "acme", "match_record", 1)
    with pytest.raises(InsufficientCredits):
        ledger.charge("a", "acme", "match_record", 1)
    assert ledger.charge("c", "other-org", "match_record", 1).mode is CreditMode.SHADOW


def test_idempotency_replays_same_body_and_refuses_another() -> None:
    store = IdempotencyStore()
    first = Fingerprint.of("POST", "/api/v2/match/record", b'{"a":1}')
    other = Fingerprint.of("POST", "/api/v2/match/record", b'{"a":2}')
    assert store.begin("dev", "k1", first, NOW) is None
    with pytest.raises(Conflict) as busy:
        store.begin("dev", "k1", first, NOW)
    assert busy.value.code == "IDEMPOTENCY_IN_PROGRESS"
    answer = StoredResponse(200, b"{}", (("X-Request-Id", "req_1"),))
    store.finish("dev", "k1", answer)
    assert store.begin("dev", "k1", first, NOW + 1) == answer
    with pytest.raises(Conflict) as reused:
        store.begin("dev", "k1", other, NOW + 1)
    assert reused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert store.begin("other-key", "k1", other, NOW) is None  # per API key
    assert store.begin("dev", "k1", other, NOW + 24 * 3600) is None  # expired after 24 h
    store.abandon("dev", "k1")
    assert store.begin("dev", "k1", first, NOW + 24 * 3600) is None
    with pytest.raises(InvalidRequest):
        store.begin("dev", "", first, NOW)


def test_webhook_signature_is_hmac_sha256_of_the_raw_body() -> None:
    import hashlib
    import hmac

    body = b'{"event":"job.completed"}'
    expected = "sha256=" + hmac.new(b"whsec_x", body, hashlib.sha256).hexdigest()
    assert webhooks.signature("whsec_x", body) == expected
    assert webhooks.verify_signature("whsec_x", body, expected)
    assert not webhooks.verify_signature("whsec_x", body + b" ", expected)


@pytest.mark.parametrize(
    ("url", "allowed", "ok"),
    [
        ("http://127.0.0.1:9000/hook", webhooks.DEFAULT_ALLOWED_HOSTS, True),
        ("http://localhost/hook", webhooks.DEFAULT_ALLOWED_HOSTS, True),
        ("http://[::1]:8080/hook", webhooks.DEFAULT_ALLOWED_HOSTS, True),
        ("https://your-app.com/webhook/match-complete", webhooks.DEFAULT_ALLOWED_HOSTS, False),
        ("https://hooks.example.com/x", ("*.example.com",), True),
        ("https://example.com.evil.io/x", ("*.example.com",), False),
    ],
)
def test_allowed_hosts(url: str, allowed: tuple[str, ...], ok: bool) -> None:
    assert webhooks.host_allowed(url, allowed) is ok


@pytest.mark.parametrize("url", ["ftp://x/y", "not a url", 5, "http://", "http://h:99999/"])
def test_bad_callback_urls_are_refused(url: object) -> None:
    with pytest.raises(InvalidRequest):
        webhooks.parse_callback_url(url)


def test_delivery_retries_with_backoff_then_gives_up() -> None:
    record = webhooks.Delivery("dlv_1", "job_1", "http://127.0.0.1/h", NOW)
    assert [webhooks.retry_delay(n) for n in (1, 2, 3, 4, 10)] == [1.0, 2.0, 4.0, 8.0, 60.0]
    webhooks.apply(record, webhooks.DeliveryEvent.RETRY, NOW, status_code=500, error="HTTP 500")
    assert (record.status, record.attempts) == (webhooks.DeliveryStatus.PENDING, 1)
    webhooks.apply(record, webhooks.DeliveryEvent.GIVE_UP, NOW, error="timeout")
    assert record.status is webhooks.DeliveryStatus.FAILED
    with pytest.raises(Conflict):
        webhooks.apply(record, webhooks.DeliveryEvent.SUCCEED, NOW)
    assert record.attempts == 2


def test_presigned_urls_are_signed_and_expire() -> None:
    signer = uploads.Presigner(b"k" * 32)
    expires = int(NOW) + 900
    good = signer.sign("sk_1", expires)
    signer.verify("sk_1", str(expires), good, NOW)
    for key, exp, sig, code in [
        ("sk_2", str(expires), good, "INVALID_SIGNATURE"),
        ("sk_1", str(expires + 1), good, "INVALID_SIGNATURE"),
        ("sk_1", None, good, "INVALID_SIGNATURE"),
        ("sk_1", str(expires), None, "INVALID_SIGNATURE"),
    ]:
        with pytest.raises(Forbidden) as caught:
            signer.verify(key, exp, sig, NOW)
        assert caught.value.code == code
    with pytest.raises(Forbidden) as late:
        signer.verify("sk_1", str(expires), good, expires)
    assert late.value.code == "UPLOAD_URL_EXPIRED"


def test_upload_state_machine(tmp_path: Path) -> None:
    upload = uploads.Upload("sk_1", "match", "dev", NOW, NOW + 900, tmp_path / "f")
    uploads.apply(upload, uploads.UploadEvent.BEGIN, NOW)
    with pytest.raises(Conflict):
        uploads.apply(upload, uploads.UploadEvent.BEGIN, NOW)
    uploads.apply(upload, uploads.UploadEvent.BREAK, NOW)
    uploads.apply(upload, uploads.UploadEvent.BEGIN, NOW)
    uploads.apply(upload, uploads.UploadEvent.FINISH, NOW, size=10)
    assert (upload.status, upload.size) == (uploads.UploadStatus.UPLOADED, 10)
    with pytest.raises(Conflict) as again:
        uploads.apply(upload, uploads.UploadEvent.BEGIN, NOW)
    assert again.value.code == "UPLOAD_ALREADY_COMPLETED"


def test_decision_logs_are_kept_30_days() -> None:
    log = DecisionLog()
    log.record(Decision(NOW, "req_1", "dev", "dss_1", "balanced", 0.8, 1, 1.0))
    log.record(Decision(NOW + 10, "req_2", "dev", "dss_1", "balanced", 0.8, 0, None))
    assert log.sweep(NOW + 30 * 86400 - 1) == 0
    assert log.sweep(NOW + 30 * 86400) == 1
    assert [d.request_id for d in log.decisions] == ["req_2"]


def test_active_jobs_are_counted_per_key_and_finished_ones_drop_out() -> None:
    table = jobs.JobTable()

    def job(job_id: str, key_id: str) -> jobs.Job:
        made = jobs.Job(job_id, "match_batch", key_id, "dss_1", 0.0, 1, None)
        table.add(made)
        return made

    first, second, other = job("j1", "k1"), job("j2", "k1"), job("j3", "k2")
    assert table.active_for("k1") == (2, 0)
    jobs.apply(first, jobs.JobEvent.START, 1.0)
    assert table.active_for("k1") == (1, 1)
    jobs.apply(first, jobs.JobEvent.COMPLETE, 2.0)
    jobs.apply(second, jobs.JobEvent.START, 2.0)
    assert table.active_for("k1") == (0, 1)
    assert table.active_for("k2") == (1, 0)
    jobs.apply(other, jobs.JobEvent.START, 3.0)
    jobs.apply(other, jobs.JobEvent.FAIL, 3.0, error=jobs.JobError("E", "failed"))
    assert table.active_for("k2") == (0, 0)
    # A finished job stays readable after it stops counting.
    assert table.get("j3").status is jobs.JobStatus.FAILED


def test_the_decision_log_keeps_its_newest_decisions_up_to_its_capacity() -> None:
    log = DecisionLog(capacity=3)
    for index in range(5):
        log.record(Decision(float(index), f"req-{index}", "k", "dss_1", "balanced", 0.8, 0, None))
    assert [d.request_id for d in log.decisions] == ["req-2", "req-3", "req-4"]
    assert DecisionLog().capacity == 100_000
