"""Workflow definitions (the NodeDefinition DAG) and workflow runs with their two state machines.

Owns `NodeDefinition` and `WorkflowDefinition` (validated: keys unique, dependencies known, no
cycle, runtime `provider`, `$context.` paths well formed), the `$context` path helpers, and
`WorkflowRun` with `NodeRun`: the run machine (`RUN_TRANSITIONS` + `apply_run`) and the node
machine (`NODE_TRANSITIONS` + `apply_node`) are the only code that changes a status; an illegal
event raises `IllegalTransition` and changes nothing. Also `RunProgress`.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ...platform.statemachine import Transitions
from .errors import ValidationFailed, transition
from .events import INTERNAL_NODE_PREFIX
from .providers import MODALITIES, TIERS

CONTEXT_PREFIX = "$context"
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
MAX_NODES = 500


def parse_context_path(text: str, where: str) -> tuple[str, ...]:
    """`$context.a.b` -> ("a", "b"); a bad path is a ValidationFailed naming `where`."""
    if not text.startswith(CONTEXT_PREFIX + "."):
        raise ValidationFailed(f"{where}: {text!r} is not a $context.<path>")
    segments = tuple(text[len(CONTEXT_PREFIX) + 1 :].split("."))
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise ValidationFailed(f"{where}: bad segment {segment!r} in {text!r}")
    return segments


def read_path(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = context
    for segment in path:
        if not isinstance(value, Mapping) or segment not in value:
            return None
        value = value[segment]
    return value


def write_path(context: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set by dotted path, replacing what was there and making the objects on the way."""
    target = context
    for segment in path[:-1]:
        child = target.get(segment)
        if not isinstance(child, dict):
            child = {}
            target[segment] = child
        target = child
    target[path[-1]] = value


@attrs.frozen
class Binding:
    """An input or output: a `$context` path, or (inputs only) a literal value."""

    name: str
    path: tuple[str, ...] | None
    literal: Any = None


@attrs.frozen
class NodeDefinition:
    key: str
    operation: str
    runtime: str
    config: Mapping[str, Any]
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]
    depends_on: tuple[str, ...]
    # The wire form, echoed back as given.
    raw: Mapping[str, Any]

    @property
    def modality(self) -> str:
        return str(self.config.get("modality", "text"))

    @classmethod
    def from_json(cls, data: Any, index: int, defaults: Mapping[str, Any]) -> NodeDefinition:
        where = f"nodes[{index}]"
        if not isinstance(data, dict):
            raise ValidationFailed(f"{where} must be an object")
        key = data.get("key")
        if not isinstance(key, str) or not key:
            raise ValidationFailed(f"{where}.key is required")
        where = f"node {key!r}"
        runtime = data.get("runtime", "provider")
        if runtime != "provider":
            raise ValidationFailed(f"{where}: runtime must be 'provider'")
        operation = data.get("operation", "ai.generate")
        if not isinstance(operation, str) or not operation:
            raise ValidationFailed(f"{where}: operation must be a string")
        config = data.get("config") or {}
        if not isinstance(config, dict):
            raise ValidationFailed(f"{where}: config must be an object")
        merged = {**defaults, **config}
        modality = merged.get("modality", "text")
        if modality not in MODALITIES:
            raise ValidationFailed(
                f"{where}: config.modality must be one of {', '.join(MODALITIES)}"
            )
        if merged.get("tier") is not None and merged["tier"] not in TIERS:
            raise ValidationFailed(f"{where}: config.tier must be one of {', '.join(TIERS)}")
        if merged.get("params") is not None and not isinstance(merged["params"], dict):
            raise ValidationFailed(f"{where}: config.params must be an object")
        inputs = []
        for name, value in _mapping(data.get("inputs"), f"{where}: inputs").items():
            if isinstance(value, str) and value.startswith(CONTEXT_PREFIX):
                inputs.append(Binding(name, parse_context_path(value, f"{where} input {name}")))
            else:
                inputs.append(Binding(name, None, value))
        outputs = []
        for name, value in _mapping(data.get("outputs"), f"{where}: outputs").items():
            if not isinstance(value, str):
                raise ValidationFailed(f"{where} output {name}: must be a $context.<path> string")
            outputs.append(Binding(name, parse_context_path(value, f"{where} output {name}")))
        depends = data.get("depends_on") or []
        if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
            raise ValidationFailed(f"{where}: depends_on must be an array of node keys")
        return cls(
            key, operation, runtime, merged, tuple(inputs), tuple(outputs), tuple(depends), data
        )

    def resolve_inputs(self, context: Mapping[str, Any]) -> dict[str, Any]:
        return {
            b.name: (copy.deepcopy(read_path(context, b.path)) if b.path else b.literal)
            for b in self.inputs
        }


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed(f"{where} must be an object")
    return value


def check_dag(nodes: tuple[NodeDefinition, ...]) -> None:
    keys = [node.key for node in nodes]
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ValidationFailed(f"duplicate node key {key!r}")
        seen.add(key)
    for node in nodes:
        for dep in node.depends_on:
            if dep not in seen:
                raise ValidationFailed(f"node {node.key!r} depends on unknown node {dep!r}")
            if dep == node.key:
                raise ValidationFailed(f"node {node.key!r} depends on itself")
    # Kahn's algorithm: whatever cannot be ordered sits on a cycle.
    remaining = {node.key: set(node.depends_on) for node in nodes}
    while True:
        free = [key for key, deps in remaining.items() if not deps]
        if not free:
            break
        for key in free:
            del remaining[key]
        for deps in remaining.values():
            deps.difference_update(free)
    if remaining:
        raise ValidationFailed(f"dependency cycle among nodes {', '.join(sorted(remaining))}")


def parse_nodes(data: Any, defaults: Any) -> tuple[tuple[NodeDefinition, ...], dict[str, Any]]:
    if defaults is None:
        defaults = {}
    if not isinstance(defaults, dict):
        raise ValidationFailed("defaults must be an object")
    if not isinstance(data, list) or not data:
        raise ValidationFailed("nodes must be a non-empty array")
    if len(data) > MAX_NODES:
        raise ValidationFailed(f"at most {MAX_NODES} nodes")
    nodes = tuple(NodeDefinition.from_json(item, i, defaults) for i, item in enumerate(data))
    check_dag(nodes)
    return nodes, defaults


@attrs.define
class WorkflowDefinition:
    id: str
    organization_id: str
    name: str
    nodes: tuple[NodeDefinition, ...]
    defaults: dict[str, Any]
    created_by: str
    created_at: float
    updated_at: float
    version: int = 1


class RunStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class RunEvent(enum.Enum):
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"


RUN_TRANSITIONS: Transitions[RunStatus, RunEvent] = Transitions(
    "workflow run",
    {
        (RunStatus.PENDING, RunEvent.START): RunStatus.RUNNING,
        (RunStatus.PENDING, RunEvent.CANCEL): RunStatus.CANCELLED,
        # A run that ends before it starts: queued when the emulator stopped (persistence).
        (RunStatus.PENDING, RunEvent.FAIL): RunStatus.FAILED,
        (RunStatus.RUNNING, RunEvent.COMPLETE): RunStatus.COMPLETED,
        (RunStatus.RUNNING, RunEvent.FAIL): RunStatus.FAILED,
        (RunStatus.RUNNING, RunEvent.CANCEL): RunStatus.CANCELLED,
    },
)


class NodeStatus(enum.Enum):
    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def done(self) -> bool:
        return self in (NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED)


class NodeEvent(enum.Enum):
    READY = "ready"
    START = "start"
    COMPLETE = "complete"
    FAIL = "fail"
    SKIP = "skip"


NODE_TRANSITIONS: Transitions[NodeStatus, NodeEvent] = Transitions(
    "workflow node",
    {
        (NodeStatus.PENDING, NodeEvent.READY): NodeStatus.READY,
        (NodeStatus.READY, NodeEvent.START): NodeStatus.RUNNING,
        (NodeStatus.RUNNING, NodeEvent.COMPLETE): NodeStatus.COMPLETED,
        (NodeStatus.RUNNING, NodeEvent.FAIL): NodeStatus.FAILED,
        (NodeStatus.PENDING, NodeEvent.SKIP): NodeStatus.SKIPPED,
        (NodeStatus.READY, NodeEvent.SKIP): NodeStatus.SKIPPED,
        (NodeStatus.RUNNING, NodeEvent.SKIP): NodeStatus.SKIPPED,
    },
)


@attrs.define
class NodeRun:
    definition: NodeDefinition
    status: NodeStatus = NodeStatus.PENDING
    output: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: float | None = None
    completed_at: float | None = None


@attrs.frozen
class RunProgress:
    total_tasks: int
    completed_tasks: int
    current_task: str | None
    percentage: float


@attrs.define
class WorkflowRun:
    id: str
    organization_id: str
    workflow_definition_id: str | None  # None for the run that backs a job
    workflow_name: str | None
    nodes: dict[str, NodeRun]
    context: dict[str, Any]
    created_by: str
    created_at: float
    metadata: dict[str, Any] | None = None
    environment: str | None = None
    priority: int | None = None
    job_id: str | None = None
    # The API key the run was created with, for usage attribution.
    api_key_id: str | None = None
    status: RunStatus = RunStatus.PENDING
    output: Any = None
    error: str | None = None
    started_at: float | None = None
    completed_at: float | None = None

    @classmethod
    def create(
        cls,
        run_id: str,
        organization_id: str,
        definition_id: str | None,
        name: str | None,
        nodes: tuple[NodeDefinition, ...],
        context: dict[str, Any],
        created_by: str,
        now: float,
        **extra: Any,
    ) -> WorkflowRun:
        return cls(
            id=run_id,
            organization_id=organization_id,
            workflow_definition_id=definition_id,
            workflow_name=name,
            nodes={node.key: NodeRun(node) for node in nodes},
            context=copy.deepcopy(context),
            created_by=created_by,
            created_at=now,
            **extra,
        )

    def progress(self) -> RunProgress:
        visible = [n for k, n in self.nodes.items() if not k.startswith(INTERNAL_NODE_PREFIX)]
        done = sum(n.status in (NodeStatus.COMPLETED, NodeStatus.SKIPPED) for n in visible)
        current = next((k for k, n in self.nodes.items() if n.status is NodeStatus.RUNNING), None)
        total = len(visible)
        percentage = (
            100.0
            if self.status is RunStatus.COMPLETED
            else (100.0 * done / total if total else 0.0)
        )
        return RunProgress(total, done, current, percentage)

    def ready_keys(self) -> list[str]:
        """Pending nodes whose dependencies all completed, in definition order."""
        return [
            key
            for key, node in self.nodes.items()
            if node.status is NodeStatus.PENDING
            and all(
                self.nodes[d].status is NodeStatus.COMPLETED for d in node.definition.depends_on
            )
        ]

    def dependents_of(self, key: str) -> list[str]:
        """Every node that depends on `key`, directly or not, in definition order."""
        found: set[str] = set()
        frontier = {key}
        while frontier:
            nxt = {
                k
                for k, n in self.nodes.items()
                if k not in found and frontier.intersection(n.definition.depends_on)
            }
            found |= nxt
            frontier = nxt
        return [k for k in self.nodes if k in found]

    @property
    def all_done(self) -> bool:
        return all(node.status.done for node in self.nodes.values())


def apply_run(run: WorkflowRun, event: RunEvent, now: float) -> None:
    """The only place a run's status changes."""
    target = transition(RUN_TRANSITIONS, run.status, event)
    run.status = target
    if target is RunStatus.RUNNING:
        run.started_at = now
    elif target.terminal:
        run.completed_at = now


def apply_node(node: NodeRun, event: NodeEvent, now: float) -> None:
    """The only place a node's status changes."""
    target = transition(NODE_TRANSITIONS, node.status, event)
    node.status = target
    if target is NodeStatus.RUNNING:
        node.started_at = now
    elif target.done:
        node.completed_at = now


def bind_outputs(node: NodeDefinition, output: Any, context: dict[str, Any]) -> None:
    """Each output binding `n` gets output[n], else output["text"], else the whole output."""
    for binding in node.outputs:
        assert binding.path is not None
        if isinstance(output, dict) and binding.name in output:
            value = output[binding.name]
        elif isinstance(output, dict) and "text" in output:
            value = output["text"]
        else:
            value = output
        write_path(context, binding.path, copy.deepcopy(value))


IdFactory = Callable[[], str]
