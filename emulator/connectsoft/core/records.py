"""The records of the runtime platform and the one place each status changes.

Owns `Environment` (with its service inventory), `Deployment` (phases and rollout history),
`RuntimeService` (deployed vs running workload, scaling policy, health checks and faults, drift
findings), `Configuration` (immutable once published), `SecretBinding` (names and Key Vault
references only) with its `Rotation` requests, `ScalingPolicy`, `Approval` and `IdFactory`.
Each lifecycle record has one `apply` that asks its Machine for the next status and records the
change; nothing else assigns a status. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Protocol

import attrs

from .machines import (
    APPROVAL_MACHINE,
    DEPLOYMENT_MACHINE,
    ENVIRONMENT_MACHINE,
    ApprovalStatus,
    ApprovalTrigger,
    DeploymentPhase,
    DeploymentTrigger,
    EnvironmentStatus,
    EnvironmentTrigger,
)
from .requests import Component, SecretReference

HEALTH_ORDER = {"Healthy": 0, "Degraded": 1, "Unhealthy": 2}


class IdFactory(Protocol):
    def new(self, prefix: str) -> str:
        """A fresh id with the given prefix (`env-`, `dep-`, ...)."""
        ...


class RandomIds:
    """Eight random hex digits after the prefix (the length of the source's `env-9f1c2b7d`)."""

    def new(self, prefix: str) -> str:
        return prefix + secrets.token_hex(4)


@attrs.define
class SequentialIds:
    """Predictable ids for tests: `env-00000001`, `dep-00000001`, ..."""

    counters: dict[str, int] = attrs.field(factory=dict)

    def new(self, prefix: str) -> str:
        self.counters[prefix] = self.counters.get(prefix, 0) + 1
        return f"{prefix}{self.counters[prefix]:08x}"


@attrs.frozen
class StatusChange:
    status: str
    at: float
    reason: str | None = None


@attrs.frozen
class Workload:
    image: str
    replicas: int
    configuration_id: str | None


@attrs.frozen
class Check:
    name: str
    status: str
    duration_ms: int | None = None


@attrs.frozen
class Finding:
    finding_id: str
    kind: str
    desired: str
    actual: str
    severity: str
    detected_at: float


@attrs.frozen
class ScalingPolicy:
    scaling_policy_id: str
    target: str
    metric: str
    min_replicas: int
    max_replicas: int
    target_utilization_percent: int
    scale_to_zero: bool
    applied_at: float


@attrs.define(eq=False)
class RuntimeService:
    """One service (module) in one environment's inventory."""

    service_id: str
    environment_id: str
    target: str
    # What the platform last rolled out successfully (the desired state).
    deployed: Workload | None
    # What is actually running (differs from `deployed` during a rollout or after drift).
    running: Workload | None
    checks: tuple[Check, ...]
    health_status: str
    evaluated_at: float
    scaling: ScalingPolicy | None = None
    # Check names a fault reports Unhealthy.
    forced_unhealthy: frozenset[str] = frozenset()
    # The deployment rolling this service out now, if any (drift is not judged meanwhile).
    deploying: str | None = None
    drift_severity: dict[str, str] = attrs.field(factory=dict)
    findings: dict[str, Finding] = attrs.field(factory=dict)

    def effective_checks(self) -> tuple[Check, ...]:
        checks = [
            attrs.evolve(c, status="Unhealthy") if c.name in self.forced_unhealthy else c
            for c in self.checks
        ]
        names = {c.name for c in self.checks}
        checks.extend(Check(name, "Unhealthy") for name in sorted(self.forced_unhealthy - names))
        return tuple(checks)

    def computed_health(self) -> str:
        checks = self.effective_checks()
        if self.running is None:
            return "Unhealthy"
        if not checks:
            return "Healthy"
        return max((c.status for c in checks), key=HEALTH_ORDER.__getitem__)


@attrs.define(eq=False)
class Environment:
    environment_id: str
    tenant_id: str
    project_id: str
    name: str
    stage: str
    region: str
    isolation_model: str
    compute_targets: tuple[str, ...]
    trace_id: str
    created_at: float
    status: EnvironmentStatus
    updated_at: float
    # When the current timed status ends (None once settled).
    due_at: float | None = None
    history: list[StatusChange] = attrs.field(factory=list)
    services: dict[str, RuntimeService] = attrs.field(factory=dict)

    @property
    def pulumi_stack_ref(self) -> str:
        return self.name

    def apply(self, trigger: EnvironmentTrigger, at: float, reason: str | None = None) -> None:
        new = ENVIRONMENT_MACHINE.target(self.status, trigger)
        self.status = new
        self.updated_at = at
        self.due_at = None
        self.history.append(StatusChange(new.value, at, reason))


@attrs.define(eq=False)
class Deployment:
    deployment_id: str
    environment_id: str
    tenant_id: str
    release_ref: str
    components: tuple[Component, ...]
    configuration_id: str | None
    strategy: str
    trace_id: str
    created_at: float
    phase: DeploymentPhase
    updated_at: float
    due_at: float | None = None
    history: list[StatusChange] = attrs.field(factory=list)
    # What each component's service ran before the rollout (None: it is new), for rollback.
    previous: dict[str, Workload | None] = attrs.field(factory=dict)

    @property
    def finished(self) -> bool:
        return self.phase in DEPLOYMENT_MACHINE.terminal

    def apply(self, trigger: DeploymentTrigger, at: float, reason: str | None = None) -> None:
        new = DEPLOYMENT_MACHINE.target(self.phase, trigger)
        self.phase = new
        self.updated_at = at
        self.due_at = None
        self.history.append(StatusChange(new.value, at, reason))


@attrs.frozen
class Configuration:
    configuration_id: str
    environment_id: str
    tenant_id: str
    name: str
    version: int
    settings: Mapping[str, str | int | float | bool]
    published_at: float


@attrs.frozen
class Rotation:
    rotation_id: str
    secret_name: str
    requested_at: float
    # The emulator records the request; Key Vault does the rotating, so this is where it stays.
    status: str = "Requested"


@attrs.define(eq=False)
class SecretBinding:
    binding_id: str
    environment_id: str
    tenant_id: str
    service_id: str
    secrets: tuple[SecretReference, ...]
    created_at: float
    rotations: list[Rotation] = attrs.field(factory=list)


@attrs.define(eq=False)
class Approval:
    approval_id: str
    tenant_id: str
    operation: str
    environment_id: str | None
    # What the approval is for: the environment id, or `name:<name>` for a new environment.
    target: str
    requested_at: float
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_at: float | None = None

    def apply(self, trigger: ApprovalTrigger, at: float) -> None:
        self.status = APPROVAL_MACHINE.target(self.status, trigger)
        self.decided_at = at
