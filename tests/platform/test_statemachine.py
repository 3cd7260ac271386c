"""The shared transition table: lookups, refusals that change nothing, terminal states."""

from __future__ import annotations

import enum

import pytest

from emulator.platform.statemachine import IllegalTransition, Transitions


class Door(enum.Enum):
    OPEN = "open"
    SHUT = "shut"
    LOCKED = "locked"
    GONE = "gone"


class Act(enum.Enum):
    CLOSE = "close"
    OPEN = "open"
    LOCK = "lock"
    REMOVE = "remove"


DOORS: Transitions[Door, Act] = Transitions(
    "door",
    {
        (Door.OPEN, Act.CLOSE): Door.SHUT,
        (Door.SHUT, Act.OPEN): Door.OPEN,
        (Door.SHUT, Act.LOCK): Door.LOCKED,
        (Door.SHUT, Act.REMOVE): Door.GONE,
    },
)


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (Door.OPEN, Act.CLOSE, Door.SHUT),
        (Door.SHUT, Act.OPEN, Door.OPEN),
        (Door.SHUT, Act.LOCK, Door.LOCKED),
        (Door.OPEN, Act.LOCK, None),
        (Door.LOCKED, Act.OPEN, None),
        (Door.GONE, Act.CLOSE, None),
    ],
)
def test_target_follows_the_table_or_refuses(
    state: Door, event: Act, expected: Door | None
) -> None:
    assert DOORS.allows(state, event) is (expected is not None)
    if expected is None:
        with pytest.raises(IllegalTransition) as refused:
            DOORS.target(state, event)
        assert str(refused.value) == (
            f"a door in state {state.value} cannot take the event {event.value}"
        )
        assert (refused.value.state, refused.value.event) == (state, event)
    else:
        assert DOORS.target(state, event) is expected


def test_terminal_states_and_events_from() -> None:
    assert DOORS.terminal == frozenset({Door.LOCKED, Door.GONE})
    assert DOORS.events_from(Door.SHUT) == (Act.OPEN, Act.LOCK, Act.REMOVE)
    assert DOORS.events_from(Door.GONE) == ()
