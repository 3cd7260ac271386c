"""The append-only domain event log with bounded retention.

Owns `DomainEvent` (one frozen record per fact: dotted `name` such as `workflow.run.started`,
its snake `kind`, the ids it concerns, a JSON `payload`, a global `sequence`) and `EventLog`.
Sequences are contiguous, so the event with sequence s sits at s - first_retained; the oldest
events are dropped past `retention` and a resume from a dropped id replays what is retained.
`EventLog.restored` rebuilds a log from saved events (the state file) so that sequences and
`Last-Event-ID` resumes carry on across a restart. Delivery to subscribers is the engine's
business. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

INTERNAL_NODE_PREFIX = "_fabric_"


@attrs.frozen
class DomainEvent:
    id: str
    sequence: int
    name: str
    timestamp: float
    organization_id: str | None = None
    job_id: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None
    node_key: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict)

    @property
    def kind(self) -> str:
        return self.name.replace(".", "_")

    @property
    def internal(self) -> bool:
        return self.node_key is not None and self.node_key.startswith(INTERNAL_NODE_PREFIX)

    @property
    def terminal_for_run(self) -> bool:
        return self.name in RUN_TERMINAL

    @property
    def terminal_for_job(self) -> bool:
        return self.name in JOB_TERMINAL


RUN_TERMINAL = frozenset(
    {"workflow.run.completed", "workflow.run.failed", "workflow.run.cancelled"}
)
JOB_TERMINAL = frozenset({"job.completed", "job.failed"})


@attrs.frozen
class EventDraft:
    """What a producer says happened; the log gives it id, sequence and time."""

    name: str
    organization_id: str | None = None
    job_id: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None
    node_key: str | None = None
    payload: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class EventLog:
    new_id: Callable[[], str]
    retention: int = 10_000
    _events: deque[DomainEvent] = attrs.field(factory=deque)
    _sequence_of: dict[str, int] = attrs.field(factory=dict)
    # The retained events of each job and each run, oldest first (per-stream replay without
    # scanning the whole log); trimmed together with the log.
    _by_job: dict[str, deque[DomainEvent]] = attrs.field(factory=dict)
    _by_run: dict[str, deque[DomainEvent]] = attrs.field(factory=dict)
    _next_sequence: int = 1

    def __attrs_post_init__(self) -> None:
        if self.retention < 1:
            raise ValueError("retention must be at least 1")

    @classmethod
    def restored(
        cls, new_id: Callable[[], str], retention: int, events: Iterable[DomainEvent]
    ) -> EventLog:
        """A log holding saved `events` (oldest first, contiguous sequences, unique ids: the
        reader checks that) whose next event continues their sequence. With a smaller
        `retention` than when they were saved, only the newest are kept."""
        log = cls(new_id, retention)
        for event in events:
            if log._events and event.sequence != log._next_sequence:
                raise ValueError(f"event {event.id} breaks the sequence at {event.sequence}")
            if event.sequence < 1 or event.id in log._sequence_of:
                raise ValueError(f"event {event.id} is repeated or has no valid sequence")
            log._add(event)
        return log

    def append(self, draft: EventDraft, now: float) -> DomainEvent:
        event = DomainEvent(
            id=self.new_id(),
            sequence=self._next_sequence,
            name=draft.name,
            timestamp=now,
            organization_id=draft.organization_id,
            job_id=draft.job_id,
            workflow_id=draft.workflow_id,
            run_id=draft.run_id,
            node_key=draft.node_key,
            payload=draft.payload,
        )
        self._add(event)
        return event

    def _add(self, event: DomainEvent) -> None:
        self._next_sequence = event.sequence + 1
        self._events.append(event)
        self._sequence_of[event.id] = event.sequence
        if event.job_id is not None:
            self._by_job.setdefault(event.job_id, deque()).append(event)
        if event.run_id is not None:
            self._by_run.setdefault(event.run_id, deque()).append(event)
        while len(self._events) > self.retention:
            dropped = self._events.popleft()
            del self._sequence_of[dropped.id]
            _trim(self._by_job, dropped.job_id)
            _trim(self._by_run, dropped.run_id)

    def of_job(self, job_id: str) -> Iterator[DomainEvent]:
        return iter(self._by_job.get(job_id, ()))

    def of_run(self, run_id: str) -> Iterator[DomainEvent]:
        return iter(self._by_run.get(run_id, ()))

    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[DomainEvent]:
        return iter(self._events)

    @property
    def last_sequence(self) -> int:
        return self._next_sequence - 1

    def sequence_of(self, event_id: str) -> int | None:
        """The sequence of a retained event, None for an unknown or dropped id."""
        return self._sequence_of.get(event_id)

    def after(self, sequence: int) -> Iterator[DomainEvent]:
        """Retained events with a sequence above `sequence`, in order."""
        if not self._events:
            return
        start = max(0, sequence + 1 - self._events[0].sequence)
        yield from itertools.islice(self._events, start, None)

    def resume_point(self, last_event_id: str | None) -> int:
        """Where a `Last-Event-ID` resume starts: after that event, or everything if unknown."""
        if last_event_id is None:
            return 0
        found = self.sequence_of(last_event_id)
        return 0 if found is None else found


def _trim(index: dict[str, deque[DomainEvent]], key: str | None) -> None:
    """Drop the oldest event of `key` (it is the one leaving the log)."""
    if key is None:
        return
    events = index.get(key)
    if events is None:
        return
    events.popleft()
    if not events:
        del index[key]
