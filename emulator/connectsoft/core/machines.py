"""The three lifecycles of the runtime platform as transition tables: environments, deployments
and governance approvals.

Owns `EnvironmentStatus`, `DeploymentPhase`, `ApprovalStatus`, their triggers and their tables
(emulator.platform.statemachine.Transitions, the one lookup every status change goes through).
Records hold a status; only the table decides the next one, and an unknown (state, trigger) pair
raises IllegalTransition before anything changes.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import enum

from ...platform.statemachine import Transitions


class EnvironmentStatus(enum.Enum):
    PROVISIONING = "Provisioning"
    ACTIVE = "Active"
    FAILED = "Failed"


class EnvironmentTrigger(enum.Enum):
    PROVISIONED = "provisioned"
    PROVISIONING_FAILED = "provisioning_failed"


class DeploymentPhase(enum.Enum):
    REQUESTED = "Requested"
    PROVISIONING = "Provisioning"
    CONFIGURING = "Configuring"
    ROLLING_OUT = "RollingOut"
    HEALTH_GATING = "HealthGating"
    PROMOTING = "Promoting"
    COMPLETED = "Completed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


class DeploymentTrigger(enum.Enum):
    # The phase's duration ran out.
    ELAPSED = "elapsed"
    GATE_PASSED = "gate_passed"
    GATE_FAILED = "gate_failed"
    # A caller asked for a rollback before the deployment finished.
    ROLLBACK = "rollback"


_E = EnvironmentStatus
_ET = EnvironmentTrigger
ENVIRONMENT_MACHINE: Transitions[EnvironmentStatus, EnvironmentTrigger] = Transitions(
    "environment",
    {
        (_E.PROVISIONING, _ET.PROVISIONED): _E.ACTIVE,
        (_E.PROVISIONING, _ET.PROVISIONING_FAILED): _E.FAILED,
    },
)

_D = DeploymentPhase
_DT = DeploymentTrigger
DEPLOYMENT_MACHINE: Transitions[DeploymentPhase, DeploymentTrigger] = Transitions(
    "deployment",
    {
        (_D.REQUESTED, _DT.ELAPSED): _D.PROVISIONING,
        (_D.PROVISIONING, _DT.ELAPSED): _D.CONFIGURING,
        (_D.CONFIGURING, _DT.ELAPSED): _D.ROLLING_OUT,
        (_D.ROLLING_OUT, _DT.ELAPSED): _D.HEALTH_GATING,
        (_D.HEALTH_GATING, _DT.GATE_PASSED): _D.PROMOTING,
        (_D.HEALTH_GATING, _DT.GATE_FAILED): _D.ROLLING_BACK,
        (_D.PROMOTING, _DT.ELAPSED): _D.COMPLETED,
        (_D.ROLLING_BACK, _DT.ELAPSED): _D.ROLLED_BACK,
        (_D.REQUESTED, _DT.ROLLBACK): _D.ROLLING_BACK,
        (_D.PROVISIONING, _DT.ROLLBACK): _D.ROLLING_BACK,
        (_D.CONFIGURING, _DT.ROLLBACK): _D.ROLLING_BACK,
        (_D.ROLLING_OUT, _DT.ROLLBACK): _D.ROLLING_BACK,
        (_D.HEALTH_GATING, _DT.ROLLBACK): _D.ROLLING_BACK,
    },
)


def deployment_status(phase: DeploymentPhase) -> str:
    """The summary `status` of the source's example (`InProgress`) or the terminal phase name."""
    return phase.value if phase in DEPLOYMENT_MACHINE.terminal else "InProgress"


class ApprovalStatus(enum.Enum):
    PENDING = "Pending"
    GRANTED = "Granted"
    REJECTED = "Rejected"
    # A granted approval let one mutation through and cannot be used again.
    CONSUMED = "Consumed"


class ApprovalTrigger(enum.Enum):
    GRANT = "grant"
    REJECT = "reject"
    CONSUME = "consume"


_A = ApprovalStatus
_AT = ApprovalTrigger
APPROVAL_MACHINE: Transitions[ApprovalStatus, ApprovalTrigger] = Transitions(
    "approval",
    {
        (_A.PENDING, _AT.GRANT): _A.GRANTED,
        (_A.PENDING, _AT.REJECT): _A.REJECTED,
        (_A.GRANTED, _AT.CONSUME): _A.CONSUMED,
        (_A.REJECTED, _AT.CONSUME): _A.CONSUMED,
    },
)
