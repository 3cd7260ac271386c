"""Usage records, their roll-ups, and the audit log; both bounded.

Owns `UsageRecord` (one per provider call: job, workflow node, direct execute or stream),
`UsageLedger` with `summary` (totals and breakdowns by provider, modality, principal and API
key), `AuditEntry` (never carries a secret: callers pass ids and names only) and `AuditLog`.
Both drop their oldest entries past a bound. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs


@attrs.frozen
class UsageRecord:
    id: str
    organization_id: str
    principal_id: str
    api_key_id: str | None
    job_id: str | None
    workflow_run_id: str | None
    node_key: str | None
    provider_id: str
    model: str
    modality: str
    input_tokens: int
    output_tokens: int
    estimated_cost_usd: float
    created_at: float


@attrs.frozen
class Breakdown:
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


def _breakdown(
    records: list[UsageRecord], key: Callable[[UsageRecord], str | None]
) -> list[Breakdown]:
    groups: dict[str, list[UsageRecord]] = {}
    for record in records:
        groups.setdefault(key(record) or "none", []).append(record)
    return [
        Breakdown(
            name,
            len(items),
            sum(r.input_tokens for r in items),
            sum(r.output_tokens for r in items),
            sum(r.estimated_cost_usd for r in items),
        )
        for name, items in sorted(groups.items())
    ]


@attrs.frozen
class UsageSummary:
    organization_id: str
    period_start: float
    period_end: float
    total_runs: int
    total_jobs: int
    total_provider_calls: int
    total_input_tokens: int
    total_output_tokens: int
    total_cost_usd: float
    by_provider: list[Breakdown]
    by_modality: list[Breakdown]
    by_principal: list[Breakdown]
    by_api_key: list[Breakdown]


@attrs.define
class UsageLedger:
    limit: int = 100_000
    records: deque[UsageRecord] = attrs.field(factory=deque)
    # The retained records of each job, oldest first: settling a job looks its usage up here
    # instead of scanning every record (a scan made each job cost more than the one before).
    _by_job: dict[str, deque[UsageRecord]] = attrs.field(factory=dict)

    def add(self, record: UsageRecord) -> None:
        self.records.append(record)
        if record.job_id is not None:
            self._by_job.setdefault(record.job_id, deque()).append(record)
        while len(self.records) > self.limit:
            dropped = self.records.popleft()
            if dropped.job_id is not None:
                kept = self._by_job[dropped.job_id]
                kept.popleft()  # the oldest of its job is the one leaving
                if not kept:
                    del self._by_job[dropped.job_id]

    def for_org(self, organization_id: str, start: float, end: float) -> list[UsageRecord]:
        return [
            r
            for r in self.records
            if r.organization_id == organization_id and start <= r.created_at <= end
        ]

    def for_job(self, job_id: str) -> list[UsageRecord]:
        return list(self._by_job.get(job_id, ()))

    def summary(
        self, organization_id: str, start: float, end: float, runs: int, jobs: int
    ) -> UsageSummary:
        records = self.for_org(organization_id, start, end)
        return UsageSummary(
            organization_id=organization_id,
            period_start=start,
            period_end=end,
            total_runs=runs,
            total_jobs=jobs,
            total_provider_calls=len(records),
            total_input_tokens=sum(r.input_tokens for r in records),
            total_output_tokens=sum(r.output_tokens for r in records),
            total_cost_usd=sum(r.estimated_cost_usd for r in records),
            by_provider=_breakdown(records, lambda r: r.provider_id),
            by_modality=_breakdown(records, lambda r: r.modality),
            by_principal=_breakdown(records, lambda r: r.principal_id),
            by_api_key=_breakdown(records, lambda r: r.api_key_id),
        )


@attrs.frozen
class AuditEntry:
    id: str
    organization_id: str | None
    principal_id: str
    api_key_id: str | None
    action: str
    resource_type: str
    resource_id: str
    metadata: dict[str, Any]
    request_id: str | None
    created_at: float


@attrs.define
class AuditLog:
    limit: int = 10_000
    entries: deque[AuditEntry] = attrs.field(factory=deque)

    def add(self, entry: AuditEntry) -> None:
        self.entries.append(entry)
        while len(self.entries) > self.limit:
            self.entries.popleft()

    def newest_first(self, organizations: Iterable[str]) -> list[AuditEntry]:
        wanted = set(organizations)
        return [e for e in reversed(self.entries) if e.organization_id in wanted]
