"""The canonical event envelope and the append-only event log with bounded retention.

Owns `Event` (eventId, eventType, tenantId, projectId, moduleId, traceId, correlationId,
causationId, occurredAt, payload, plus the log's `sequence`), `EventLog` (append, read after a
sequence, resume from a `Last-Event-ID`) and `Resume` (what a reader gets back, including whether
events it asked for were already dropped). The SSE `id:` of an event is its sequence number, so
resuming is a lookup, not a scan. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs


def iso(seconds: float) -> str:
    """RFC 3339 in UTC with a `Z`, to the second, as in the source's examples."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.frozen
class Event:
    sequence: int
    event_id: str
    event_type: str
    tenant_id: str
    project_id: str | None
    module_id: str | None
    trace_id: str | None
    # The lifecycle this event belongs to (environmentId, deploymentId, ...).
    correlation_id: str
    # The event that led to this one (the previous event of the same lifecycle), if any.
    causation_id: str | None
    occurred_at: float
    payload: Mapping[str, Any]

    def envelope(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "eventType": self.event_type,
            "tenantId": self.tenant_id,
            "projectId": self.project_id,
            "moduleId": self.module_id,
            "traceId": self.trace_id,
            "correlationId": self.correlation_id,
            "causationId": self.causation_id,
            "occurredAt": iso(self.occurred_at),
            "payload": dict(self.payload),
        }


@attrs.frozen
class Resume:
    events: tuple[Event, ...]
    # True when the reader asked for events that retention already dropped.
    gap: bool


@attrs.define
class EventLog:
    """Append-only; keeps the newest `retention` events."""

    retention: int
    _events: deque[Event] = attrs.field(init=False)
    _last_sequence: int = 0
    # The newest event of each lifecycle, for causationId.
    _last_of: dict[str, str] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if self.retention < 1:
            raise ValueError("retention must be at least 1")
        self._events = deque(maxlen=self.retention)

    @property
    def last_sequence(self) -> int:
        return self._last_sequence

    def append(
        self,
        *,
        event_id: str,
        event_type: str,
        tenant_id: str,
        project_id: str | None,
        module_id: str | None,
        trace_id: str | None,
        correlation_id: str,
        occurred_at: float,
        payload: Mapping[str, Any],
    ) -> Event:
        self._last_sequence += 1
        event = Event(
            sequence=self._last_sequence,
            event_id=event_id,
            event_type=event_type,
            tenant_id=tenant_id,
            project_id=project_id,
            module_id=module_id,
            trace_id=trace_id,
            correlation_id=correlation_id,
            causation_id=self._last_of.get(correlation_id),
            occurred_at=occurred_at,
            payload=payload,
        )
        self._events.append(event)
        self._last_of[correlation_id] = event_id
        return event

    def after(self, sequence: int, *, limit: int | None = None) -> Resume:
        """Events with a sequence above `sequence`, oldest first."""
        if not self._events:
            return Resume((), False)
        first = self._events[0].sequence
        gap = sequence + 1 < first
        start = max(sequence + 1 - first, 0)
        stop = len(self._events) if limit is None else min(len(self._events), start + limit)
        return Resume(tuple(self._events[i] for i in range(start, stop)), gap)

    def resume(self, last_event_id: str | None, *, limit: int | None = None) -> Resume:
        """Events after an SSE `Last-Event-ID` (None or unreadable: from the oldest kept)."""
        if last_event_id is None or not last_event_id.strip().isdigit():
            # A new reader starts with the oldest event kept and has missed nothing.
            oldest = self._events[0].sequence if self._events else 1
            return self.after(oldest - 1, limit=limit)
        sequence = int(last_event_id.strip())
        if sequence > self._last_sequence:
            # An id from before a reset or from another emulator: start over, and say so.
            return attrs.evolve(self.after(0, limit=limit), gap=True)
        return self.after(sequence, limit=limit)

    def __len__(self) -> int:
        return len(self._events)
