"""Everything one FoundryOps instance knows, in one record, and the synchronous operations on it.

Owns `OpsState` (keys, tiers, datasets and snapshots, artifacts, uploads, jobs, credits, rate
limits, idempotency, audit trail, decision log, callback deliveries) and the request-level
rules that need several stores at once: `authorize` (key, scope, rate limit), `new_job_checks`
(job slot, snapshot, callback URL) and `sweep` (retention on the injected clock). Validate
first, mutate second. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from typing import Any

import attrs

from .access import ApiKey, KeyRing, TierLimits, require_scope
from .artifacts import ArtifactStore
from .audit import AuditEvent, AuditTrail, DecisionLog
from .credits import Ledger
from .datasets import DatasetStore, Snapshot
from .errors import InvalidRequest
from .idempotency import IdempotencyStore
from .ids import IdFactory
from .jobs import JobTable
from .ratelimit import RateLimiter, RateStatus, check_job_slot
from .uploads import Presigner, UploadTable
from .webhooks import Delivery, parse_callback_url

MAX_BATCH_RECORDS = 100


@attrs.frozen
class Caller:
    """An authenticated request: the key, its tier and the rate-limit status after this call."""

    key: ApiKey
    tier: TierLimits
    rate: RateStatus


@attrs.define
class OpsState:
    ids: IdFactory
    keys: KeyRing
    tiers: dict[str, TierLimits]
    datasets: DatasetStore
    artifacts: ArtifactStore
    uploads: UploadTable
    presigner: Presigner
    ledger: Ledger
    limiter: RateLimiter = attrs.field(factory=RateLimiter)
    jobs: JobTable = attrs.field(factory=JobTable)
    idempotency: IdempotencyStore = attrs.field(factory=IdempotencyStore)
    audit: AuditTrail = attrs.field(factory=AuditTrail)
    decisions: DecisionLog = attrs.field(factory=DecisionLog)
    deliveries: dict[str, Delivery] = attrs.field(factory=dict)

    def authorize(self, authorization: str | None, scope: str | None, now: float) -> Caller:
        """The key behind the header, checked for `scope`, with one rate-limit token spent."""
        key = self.keys.authenticate(authorization)
        tier = self.tiers[key.tier]
        if scope is not None:
            require_scope(key, scope)
        queued, _ = self.jobs.active_for(key.key_id)
        rate = self.limiter.take(key.key_id, tier, now, queue_depth=queued)
        return Caller(key, tier, rate)

    def resolve_snapshot(self, body: dict[str, Any]) -> Snapshot:
        """`snapshot_id`, or the active snapshot of `dataset_id`."""
        snapshot_id = body.get("snapshot_id")
        dataset_id = body.get("dataset_id")
        if isinstance(snapshot_id, str) and snapshot_id:
            return self.datasets.snapshot(snapshot_id)
        if isinstance(dataset_id, str) and dataset_id:
            return self.datasets.active_snapshot(dataset_id)
        raise InvalidRequest(
            "INVALID_REQUEST",
            "snapshot_id is required (or dataset_id, to use its active snapshot).",
            {"field": "snapshot_id"},
        )

    def callback_for(self, caller: Caller, body: dict[str, Any]) -> str | None:
        value = body.get("callback_url")
        if value is None:
            return None
        require_scope(caller.key, "webhooks")
        return parse_callback_url(value)

    def check_job_slot(self, caller: Caller) -> None:
        queued, running = self.jobs.active_for(caller.key.key_id)
        check_job_slot(caller.tier, queued, running)

    def record(self, event: AuditEvent) -> None:
        self.audit.record(event)

    def sweep(self, now: float) -> dict[str, int]:
        """Retention: artifacts and uploads 24 h, decision logs 30 d, finished jobs 24 h."""
        artifacts = self.artifacts.sweep(now)
        for artifact in artifacts:
            if artifact.path is not None:
                artifact.path.unlink(missing_ok=True)
        uploads = self.uploads.expired(now, self.artifacts.retention_seconds)
        for upload in uploads:
            upload.path.unlink(missing_ok=True)
        jobs = self.jobs.forget_finished_before(now - self.artifacts.retention_seconds)
        decisions = self.decisions.sweep(now)
        self.idempotency.expire(now)
        return {
            "artifacts": len(artifacts),
            "uploads": len(uploads),
            "jobs": len(jobs),
            "decisions": decisions,
        }
