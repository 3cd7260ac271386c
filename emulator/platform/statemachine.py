"""One shared shape for every explicit state machine: an enum of states, an enum of events and
one transition table.

Owns `Transitions`, the table `(state, event) -> state` with the single lookup every `apply`
function of a service goes through, and `IllegalTransition`, raised (before anything changes)
for an event the table does not allow in the current state. A service's `apply` function
assigns the state it gets back and does the bookkeeping of its own records; no status is
assigned anywhere else. Imports nothing from the rest of the package, trio, quart or yaml.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class IllegalTransition(ValueError):
    """The event is not allowed in the current state; nothing changed."""

    def __init__(self, machine: str, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"a {machine} in state {state.value} cannot take the event {event.value}")
        self.machine = machine
        self.state = state
        self.event = event


class Transitions(Generic[S, E]):
    """The transition table of one kind of record (`machine` names it in errors)."""

    def __init__(self, machine: str, table: Mapping[tuple[S, E], S]) -> None:
        self.machine = machine
        self.table = dict(table)
        targets = set(self.table.values())
        sources = {state for state, _ in self.table}
        # States no event leaves: the terminal ones.
        self.terminal = frozenset(targets - sources)

    def target(self, state: S, event: E) -> S:
        """The state `event` leads to from `state`; IllegalTransition if it is not allowed."""
        found = self.table.get((state, event))
        if found is None:
            raise IllegalTransition(self.machine, state, event)
        return found

    def allows(self, state: S, event: E) -> bool:
        return (state, event) in self.table

    def events_from(self, state: S) -> tuple[E, ...]:
        """The events allowed in `state`, in table order (for error messages and docs)."""
        return tuple(event for (source, event) in self.table if source == state)
