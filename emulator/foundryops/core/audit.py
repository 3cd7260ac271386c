"""The audit trail of every mutation and the decision log of matches, with their retention.

Owns `AuditEvent` (when, request id, correlation id, key id - never a secret -, action,
target, outcome), `AuditTrail` (bounded, newest last) and `DecisionLog` (one entry per match
decision, kept 30 days on the injected clock, the source's "decision logs 30d").
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

DECISION_RETENTION_SECONDS = 30 * 24 * 3600.0


@attrs.frozen
class AuditEvent:
    at: float
    request_id: str
    correlation_id: str
    key_id: str
    action: str  # "dataset.create", "dataset.append", "job.submit", ...
    target: str
    outcome: str = "ok"

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class AuditTrail:
    capacity: int = 100_000
    events: deque[AuditEvent] = attrs.field(factory=deque)

    def record(self, event: AuditEvent) -> None:
        self.events.append(event)
        while len(self.events) > self.capacity:
            self.events.popleft()

    def list(self, *, since: float | None = None, limit: int = 1000) -> list[AuditEvent]:
        chosen = [e for e in self.events if since is None or e.at >= since]
        return chosen[-limit:]


@attrs.frozen
class Decision:
    at: float
    request_id: str
    key_id: str
    snapshot_id: str
    profile: str
    threshold: float
    match_count: int
    top_score: float | None
    job_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.define
class DecisionLog:
    # The newest decisions kept, whatever their age: a load test of `match/record` at a few
    # thousand requests a second would otherwise hold 30 days of them (a million entries,
    # some 200 MB, within minutes).
    capacity: int = 100_000
    retention_seconds: float = DECISION_RETENTION_SECONDS
    decisions: deque[Decision] = attrs.field(factory=deque)

    def record(self, decision: Decision) -> None:
        self.decisions.append(decision)
        while len(self.decisions) > self.capacity:
            self.decisions.popleft()

    def sweep(self, now: float) -> int:
        removed = 0
        while self.decisions and now - self.decisions[0].at >= self.retention_seconds:
            self.decisions.popleft()
            removed += 1
        return removed
