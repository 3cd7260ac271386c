"""The event log: envelope keys, bounded retention, Last-Event-ID resume with gap reporting."""

from __future__ import annotations

import pytest

from emulator.connectsoft.core.events import EventLog

ENVELOPE_KEYS = [
    "eventId",
    "eventType",
    "tenantId",
    "projectId",
    "moduleId",
    "traceId",
    "correlationId",
    "causationId",
    "occurredAt",
    "payload",
]


def fill(log: EventLog, count: int) -> None:
    for n in range(count):
        log.append(
            event_id=f"evt-{n}",
            event_type="Thing",
            tenant_id="t",
            project_id="p",
            module_id=None,
            trace_id="trace-1",
            correlation_id="env-1",
            occurred_at=1_781_200_800.0 + n,
            payload={"n": n},
        )


def test_envelope() -> None:
    log = EventLog(10)
    fill(log, 2)
    first, second = log.after(0).events
    assert list(second.envelope()) == ENVELOPE_KEYS
    assert second.envelope()["occurredAt"] == "2026-06-11T18:00:01Z"
    assert first.causation_id is None
    assert second.causation_id == "evt-0"


@pytest.mark.parametrize(
    ("last_event_id", "sequences", "gap"),
    [
        (None, [3, 4, 5], False),
        ("0", [3, 4, 5], True),
        ("2", [3, 4, 5], False),
        ("3", [4, 5], False),
        ("5", [], False),
        ("99", [3, 4, 5], True),
        ("garbage", [3, 4, 5], False),
    ],
)
def test_resume_with_retention(last_event_id: str | None, sequences: list[int], gap: bool) -> None:
    log = EventLog(3)
    fill(log, 5)
    assert len(log) == 3
    resume = log.resume(last_event_id)
    assert [e.sequence for e in resume.events] == sequences
    assert resume.gap is gap


def test_limit_and_empty() -> None:
    log = EventLog(10)
    assert log.after(0).events == ()
    fill(log, 5)
    assert [e.sequence for e in log.after(1, limit=2).events] == [2, 3]
    with pytest.raises(ValueError, match="retention"):
        EventLog(0)
