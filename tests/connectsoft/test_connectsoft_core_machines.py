"""The transition tables: every legal step, and illegal ones that raise and change nothing."""

from __future__ import annotations

import pytest

from emulator.connectsoft.core.machines import (
    APPROVAL_MACHINE,
    DEPLOYMENT_MACHINE,
    ENVIRONMENT_MACHINE,
    deployment_status,
)
from emulator.connectsoft.core.machines import (
    ApprovalStatus as A,
)
from emulator.connectsoft.core.machines import (
    ApprovalTrigger as AT,
)
from emulator.connectsoft.core.machines import (
    DeploymentPhase as D,
)
from emulator.connectsoft.core.machines import (
    DeploymentTrigger as DT,
)
from emulator.connectsoft.core.machines import (
    EnvironmentStatus as E,
)
from emulator.connectsoft.core.machines import (
    EnvironmentTrigger as ET,
)
from emulator.connectsoft.core.records import Deployment
from emulator.platform.statemachine import IllegalTransition

LEGAL_DEPLOYMENT = [
    (D.REQUESTED, DT.ELAPSED, D.PROVISIONING),
    (D.PROVISIONING, DT.ELAPSED, D.CONFIGURING),
    (D.CONFIGURING, DT.ELAPSED, D.ROLLING_OUT),
    (D.ROLLING_OUT, DT.ELAPSED, D.HEALTH_GATING),
    (D.HEALTH_GATING, DT.GATE_PASSED, D.PROMOTING),
    (D.HEALTH_GATING, DT.GATE_FAILED, D.ROLLING_BACK),
    (D.PROMOTING, DT.ELAPSED, D.COMPLETED),
    (D.ROLLING_BACK, DT.ELAPSED, D.ROLLED_BACK),
    (D.REQUESTED, DT.ROLLBACK, D.ROLLING_BACK),
    (D.ROLLING_OUT, DT.ROLLBACK, D.ROLLING_BACK),
    (D.HEALTH_GATING, DT.ROLLBACK, D.ROLLING_BACK),
]

ILLEGAL_DEPLOYMENT = [
    (D.COMPLETED, DT.ELAPSED),
    (D.COMPLETED, DT.ROLLBACK),
    (D.ROLLED_BACK, DT.ELAPSED),
    (D.HEALTH_GATING, DT.ELAPSED),
    (D.PROMOTING, DT.ROLLBACK),
    (D.ROLLING_BACK, DT.ROLLBACK),
    (D.REQUESTED, DT.GATE_PASSED),
]


@pytest.mark.parametrize(("state", "trigger", "expected"), LEGAL_DEPLOYMENT)
def test_deployment_legal(state: D, trigger: DT, expected: D) -> None:
    assert DEPLOYMENT_MACHINE.target(state, trigger) is expected


def _deployment(phase: D) -> Deployment:
    return Deployment(
        "dep-1", "env-1", "t", "r", (), None, "RollingHealthGated", "trace-1", 0.0, phase, 0.0
    )


@pytest.mark.parametrize(("state", "trigger"), ILLEGAL_DEPLOYMENT)
def test_deployment_illegal_changes_nothing(state: D, trigger: DT) -> None:
    record = _deployment(state)
    with pytest.raises(IllegalTransition) as caught:
        record.apply(trigger, 5.0)
    assert (caught.value.state, caught.value.event) == (state, trigger)
    assert record.phase is state
    assert record.history == []
    assert record.updated_at == 0.0


@pytest.mark.parametrize(
    ("state", "trigger", "expected"),
    [
        (E.PROVISIONING, ET.PROVISIONED, E.ACTIVE),
        (E.PROVISIONING, ET.PROVISIONING_FAILED, E.FAILED),
    ],
)
def test_environment_legal(state: E, trigger: ET, expected: E) -> None:
    assert ENVIRONMENT_MACHINE.target(state, trigger) is expected


@pytest.mark.parametrize(
    ("state", "trigger"),
    [(E.ACTIVE, ET.PROVISIONED), (E.FAILED, ET.PROVISIONED), (E.ACTIVE, ET.PROVISIONING_FAILED)],
)
def test_environment_illegal(state: E, trigger: ET) -> None:
    with pytest.raises(IllegalTransition):
        ENVIRONMENT_MACHINE.target(state, trigger)


@pytest.mark.parametrize(
    ("state", "trigger", "expected"),
    [
        (A.PENDING, AT.GRANT, A.GRANTED),
        (A.PENDING, AT.REJECT, A.REJECTED),
        (A.GRANTED, AT.CONSUME, A.CONSUMED),
        (A.GRANTED, AT.GRANT, None),
        (A.CONSUMED, AT.CONSUME, None),
        (A.PENDING, AT.CONSUME, None),
    ],
)
def test_approval_table(state: A, trigger: AT, expected: A | None) -> None:
    assert APPROVAL_MACHINE.allows(state, trigger) is (expected is not None)
    if expected is not None:
        assert APPROVAL_MACHINE.target(state, trigger) is expected


@pytest.mark.parametrize(
    ("phase", "status"),
    [
        (D.REQUESTED, "InProgress"),
        (D.HEALTH_GATING, "InProgress"),
        (D.ROLLING_BACK, "InProgress"),
        (D.COMPLETED, "Completed"),
        (D.ROLLED_BACK, "RolledBack"),
    ],
)
def test_summary_status(phase: D, status: str) -> None:
    assert deployment_status(phase) == status
