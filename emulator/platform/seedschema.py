"""The emulator's one JSON-with-path reader: plain data (a seed from YAML or a test's dict, a
state file) into typed values with exact error paths.

Owns `SeedError` and `Node`, a value together with its path in the document
(`foundry.users[2].username`). Service seed modules and state-file readers build their attrs
values from Nodes with named constructors; every problem is one exception naming the source,
the path and what is wrong: a `SeedError` by default, or whatever the node's `failure` makes
(the state file reads with ValueError). Imports no YAML and nothing from trio, quart or
hypercorn.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs

JSON = Any
T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)


@attrs.define(auto_exc=True, eq=False)
class SeedError(Exception):
    """One precise seed problem: file, YAML path, message."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.path or '<top>'}: {self.message}"


_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "true or false",
    int: "an integer",
    float: "a number",
    type(None): "empty",
}


def _describe(value: object) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def plain_failure(source: str, path: str, message: str) -> Exception:
    """A ValueError "path: message" (for readers whose caller names the source itself)."""
    return ValueError(f"{path or '<top>'}: {message}")


@attrs.frozen
class Node:
    """A piece of data and where it sits in its document."""

    value: Any
    path: str = ""
    source: str = ""
    # Builds the exception for a problem: (source, path, message).
    failure: Callable[[str, str, str], Exception] = SeedError

    def error(self, message: str) -> Exception:
        return self.failure(self.source, self.path, message)

    def _child(self, value: Any, key: str | int) -> Node:
        if isinstance(key, int):
            path = f"{self.path}[{key}]"
        else:
            path = f"{self.path}.{key}" if self.path else key
        return Node(value, path, self.source, self.failure)

    # Scalars -------------------------------------------------------------------------------

    def as_str(self, *, allow_empty: bool = False) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {_describe(self.value)}")
        if not allow_empty and not self.value.strip():
            raise self.error("must not be empty")
        return self.value

    def as_int(self, *, minimum: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error(f"expected an integer, got {_describe(self.value)}")
        if minimum is not None and self.value < minimum:
            raise self.error(f"must be at least {minimum}, got {self.value}")
        return self.value

    def as_float(self, *, minimum: float | None = None) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.error(f"expected a number, got {_describe(self.value)}")
        number = float(self.value)
        if minimum is not None and number < minimum:
            raise self.error(f"must be at least {minimum:g}, got {number:g}")
        return number

    def as_bool(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.error(f"expected true or false, got {_describe(self.value)}")
        return self.value

    def as_choice(self, choices: Iterable[str]) -> str:
        options = tuple(choices)
        text = self.as_str()
        if text not in options:
            raise self.error(f"must be one of {', '.join(options)}, got {text!r}")
        return text

    def as_json(self) -> JSON:
        """Any JSON-compatible value, checked all the way down."""
        _check_json(self)
        return self.value

    # Containers ----------------------------------------------------------------------------

    def as_list(self) -> list[Node]:
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {_describe(self.value)}")
        return [self._child(item, index) for index, item in enumerate(self.value)]

    def as_str_list(self) -> tuple[str, ...]:
        return tuple(item.as_str() for item in self.as_list())

    def as_items(self) -> list[tuple[str, Node]]:
        """A mapping with free-form string keys (for example token strings or attributes)."""
        if self.value is None:
            return []
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {_describe(self.value)}")
        items = []
        for key, value in self.value.items():
            if not isinstance(key, str):
                raise self.error(f"keys must be strings, got {key!r}")
            items.append((key, self._child(value, key)))
        return items

    def fields(self, required: Iterable[str] = (), optional: Iterable[str] = ()) -> Fields:
        """A mapping with a fixed set of keys: unknown keys and missing required keys are errors."""
        required = tuple(required)
        optional = tuple(optional)
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {_describe(self.value)}")
        allowed = set(required) | set(optional)
        for key in self.value:
            if key not in allowed:
                names = ", ".join(sorted(allowed))
                raise self._child(None, str(key)).error(f"unknown key (allowed here: {names})")
        for key in required:
            if key not in self.value:
                raise self._child(None, key).error("required field is missing")
        return Fields(self)


@attrs.frozen
class Fields:
    """The checked keys of a mapping node."""

    node: Node

    def __getitem__(self, key: builtins.str) -> Node:
        return self.node._child(self.node.value[key], key)

    def get(self, key: builtins.str) -> Node | None:
        """The field's node, or None when it is absent or written as empty (`key:`)."""
        if self.node.value.get(key) is None:
            return None
        return self[key]

    def str(
        self,
        key: builtins.str,
        default: builtins.str | None = None,
        *,
        allow_empty: builtins.bool = False,
    ) -> builtins.str:
        node = self.get(key)
        if node is None:
            if default is None:
                raise self.node._child(None, key).error("required field is missing")
            return default
        return node.as_str(allow_empty=allow_empty)

    def opt_str(
        self, key: builtins.str, *, allow_empty: builtins.bool = False
    ) -> builtins.str | None:
        node = self.get(key)
        return None if node is None else node.as_str(allow_empty=allow_empty)

    def opt_float(self, key: builtins.str) -> builtins.float | None:
        node = self.get(key)
        return None if node is None else node.as_float()

    def opt_int(self, key: builtins.str) -> builtins.int | None:
        node = self.get(key)
        return None if node is None else node.as_int()

    def choice(self, key: builtins.str, kind: type[E]) -> E:
        """A required string that is the value of a member of the enum `kind`."""
        node = self.get(key)
        if node is None:
            raise self.node._child(None, key).error("required field is missing")
        return kind(node.as_choice(member.value for member in kind))

    def _present(self, key: builtins.str) -> Node:
        node = self.get(key)
        if node is None:
            raise self.node._child(None, key).error("required field is missing")
        return node

    def bool(self, key: builtins.str, default: builtins.bool | None = None) -> builtins.bool:
        """The field, or `default` when absent (None: the field is required)."""
        if default is None:
            return self._present(key).as_bool()
        node = self.get(key)
        return default if node is None else node.as_bool()

    def int(
        self,
        key: builtins.str,
        default: builtins.int | None = None,
        *,
        minimum: builtins.int | None = None,
    ) -> builtins.int:
        if default is None:
            return self._present(key).as_int(minimum=minimum)
        node = self.get(key)
        return default if node is None else node.as_int(minimum=minimum)

    def float(
        self,
        key: builtins.str,
        default: builtins.float | None = None,
        *,
        minimum: builtins.float | None = None,
    ) -> builtins.float:
        if default is None:
            return self._present(key).as_float(minimum=minimum)
        node = self.get(key)
        return default if node is None else node.as_float(minimum=minimum)

    def list(self, key: builtins.str) -> builtins.list[Node]:
        node = self.get(key)
        return [] if node is None else node.as_list()

    def str_list(
        self, key: builtins.str, default: tuple[builtins.str, ...] = ()
    ) -> tuple[builtins.str, ...]:
        node = self.get(key)
        return default if node is None else node.as_str_list()

    def has(self, key: builtins.str) -> builtins.bool:
        return key in self.node.value


def check_unique(items: Iterable[tuple[Node, T]], what: str) -> None:
    """Raise at the second node whose key repeats an earlier one."""
    seen: dict[T, str] = {}
    for node, key in items:
        if key in seen:
            raise node.error(f"duplicate {what} {key!r} (first defined at {seen[key]})")
        seen[key] = node.path


def build_list(nodes: Iterable[Node], build: Callable[[Node], T]) -> tuple[T, ...]:
    return tuple(build(node) for node in nodes)


def _check_json(node: Node) -> None:
    value = node.value
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, list):
        for child in node.as_list():
            _check_json(child)
        return
    if isinstance(value, dict):
        for _, child in node.as_items():
            _check_json(child)
        return
    raise node.error(f"expected a JSON value, got {_describe(value)}")


def walk(node: Node) -> Iterator[Node]:
    """Every node below (and including) this one, depth first."""
    yield node
    if isinstance(node.value, list):
        for child in node.as_list():
            yield from walk(child)
    elif isinstance(node.value, dict):
        for _, child in node.as_items():
            yield from walk(child)
