"""RuntimeState: lifecycles on a manual clock, governance, tenants, faults, drift, validation."""

from __future__ import annotations

from typing import Any

import pytest
from connectsoft_builders import T0, caller, make_state

from emulator.connectsoft.core.errors import (
    ApprovalRequired,
    Conflict,
    DomainError,
    Forbidden,
    GovernanceDenied,
    InvalidArgument,
    NotFound,
)
from emulator.connectsoft.core.machines import DeploymentPhase, EnvironmentStatus
from emulator.connectsoft.core.state import RuntimeState

ENV = "env-9f1c2b7d"
PROVISION = {
    "tenantId": "connectsoft",
    "projectId": "proj-booking-saas",
    "name": "booking-dev-weu",
    "stage": "dev",
    "region": "westeurope",
    "isolationModel": "silo",
    "computeTargets": ["aks", "container-apps", "functions", "app-service"],
}
DEPLOY = {
    "tenantId": "connectsoft",
    "environmentId": ENV,
    "releaseRef": "release-2026.6.11",
    "components": [
        {
            "moduleId": "module-reservations-api",
            "image": "acr.azurecr.io/reservations-api:1.5.0",
            "target": "aks",
        },
        {
            "moduleId": "module-new-worker",
            "image": "acr.azurecr.io/new-worker:1.0.0",
            "target": "container-apps",
        },
    ],
    "strategy": "RollingHealthGated",
}
SCALE = {
    "tenantId": "connectsoft",
    "environmentId": ENV,
    "serviceId": "module-reservations-api",
    "target": "aks",
    "metric": "cpu",
    "minReplicas": 3,
    "maxReplicas": 20,
    "targetUtilizationPercent": 65,
    "scaleToZero": False,
}
HAPPY_PATH = [
    "Requested",
    "Provisioning",
    "Configuring",
    "RollingOut",
    "HealthGating",
    "Promoting",
    "Completed",
]


def types_after(state: RuntimeState, sequence: int) -> list[str]:
    return [e.event_type for e in state.events.after(sequence).events]


def phases(state: RuntimeState, deployment_id: str) -> list[str]:
    return [change.status for change in state.deployments[deployment_id].history]


def test_provisioning_becomes_active_after_its_duration(state: RuntimeState) -> None:
    env = state.provision(caller(), PROVISION, T0)
    assert env.environment_id.startswith("env-")
    assert env.trace_id == "trace-" + env.environment_id.removeprefix("env-")
    assert env.status is EnvironmentStatus.PROVISIONING
    assert state.next_due() == T0 + 5
    assert state.advance(T0 + 4.9) == 0
    assert env.status is EnvironmentStatus.PROVISIONING
    assert state.advance(T0 + 60) == 1
    assert env.status is EnvironmentStatus.ACTIVE
    # The step happened at its due time, not when advance was called.
    assert env.history[-1].at == T0 + 5
    assert state.next_due() is None
    events = [e for e in state.events.after(0).events if e.correlation_id == env.environment_id]
    assert [e.event_type for e in events] == [
        "EnvironmentProvisioningRequested",
        "EnvironmentActivated",
    ]
    assert events[1].causation_id == events[0].event_id


def test_fail_next_provisioning_fails_one_environment(state: RuntimeState) -> None:
    state.arm_provisioning_failure(1)
    first = state.provision(caller(), PROVISION, T0)
    second = state.provision(caller(), {**PROVISION, "name": "booking-test"}, T0)
    state.advance(T0 + 5)
    assert first.status is EnvironmentStatus.FAILED
    assert first.history[-1].reason == "injected provisioning failure"
    assert second.status is EnvironmentStatus.ACTIVE


def test_deployment_walks_every_phase_and_completes(state: RuntimeState) -> None:
    deployment = state.create_deployment(caller(), DEPLOY, T0)
    assert deployment.deployment_id.startswith("dep-")
    assert deployment.trace_id == "trace-9f1c2b7d"
    state.advance(T0 + 100)
    assert phases(state, deployment.deployment_id) == HAPPY_PATH
    assert [c.at - T0 for c in deployment.history] == [0, 0, 1, 2, 3, 4, 5]
    env = state.environments[ENV]
    api = env.services["module-reservations-api"]
    assert api.deployed == api.running
    assert api.running is not None
    assert api.running.image.endswith(":1.5.0")
    assert "module-new-worker" in env.services
    assert state.drift(caller(), ENV)[1] == []


def test_zero_durations_finish_in_one_step() -> None:
    zero = {
        name: 0
        for name in (
            "environment_provisioning",
            "deployment_requested",
            "deployment_provisioning",
            "deployment_configuring",
            "deployment_rolling_out",
            "deployment_health_gating",
            "deployment_promoting",
            "deployment_rolling_back",
        )
    }
    state = make_state(durations=zero)
    env = state.provision(caller(), PROVISION, T0)
    state.advance(T0)
    assert env.status is EnvironmentStatus.ACTIVE
    deployment = state.create_deployment(caller(), DEPLOY, T0)
    state.advance(T0)
    assert deployment.phase is DeploymentPhase.COMPLETED


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("gate", "injected health gate failure"),
        ("unhealthy", "service module-reservations-api is Unhealthy"),
    ],
)
def test_failed_health_gate_rolls_back(state: RuntimeState, fault: str, reason: str) -> None:
    if fault == "gate":
        state.arm_health_gate_failure(1)
    else:
        state.set_unhealthy(ENV, "module-reservations-api", "sql", True, T0)
    deployment = state.create_deployment(caller(), DEPLOY, T0)
    state.advance(T0 + 100)
    assert phases(state, deployment.deployment_id) == [
        "Requested",
        "Provisioning",
        "Configuring",
        "RollingOut",
        "HealthGating",
        "RollingBack",
        "RolledBack",
    ]
    assert deployment.history[5].reason == reason
    env = state.environments[ENV]
    api = env.services["module-reservations-api"]
    # What ran before is running again; the service the rollout brought is gone.
    assert api.running is not None
    assert api.running.image.endswith(":1.4.2")
    assert api.deployed == api.running
    assert "module-new-worker" not in env.services
    assert state.faults.fail_next_health_gate == 0


def test_rollback_on_request(state: RuntimeState) -> None:
    deployment = state.create_deployment(caller(), DEPLOY, T0)
    state.advance(T0 + 2.5)  # RollingOut
    assert deployment.phase is DeploymentPhase.ROLLING_OUT
    state.rollback_deployment(caller(), deployment.deployment_id, T0 + 2.5)
    assert deployment.phase is DeploymentPhase.ROLLING_BACK
    state.advance(T0 + 10)
    assert deployment.phase is DeploymentPhase.ROLLED_BACK
    with pytest.raises(Conflict):
        state.rollback_deployment(caller(), deployment.deployment_id, T0 + 10)


def test_one_deployment_at_a_time(state: RuntimeState) -> None:
    state.create_deployment(caller(), DEPLOY, T0)
    with pytest.raises(Conflict) as caught:
        state.create_deployment(caller(), DEPLOY, T0)
    assert caught.value.code == "DeploymentInProgress"


def test_deploying_into_a_provisioning_environment_is_a_conflict(state: RuntimeState) -> None:
    env = state.provision(caller(), PROVISION, T0)
    with pytest.raises(Conflict) as caught:
        state.create_deployment(caller(), {**DEPLOY, "environmentId": env.environment_id}, T0)
    assert caught.value.code == "EnvironmentNotActive"


BAD_CALLS: list[tuple[str, Any, str, type[DomainError], str]] = [
    (
        "create_deployment",
        {**DEPLOY, "components": []},
        "connectsoft",
        InvalidArgument,
        "InvalidRequest",
    ),
    (
        "create_deployment",
        {**DEPLOY, "environmentId": "env-nope"},
        "connectsoft",
        NotFound,
        "EnvironmentNotFound",
    ),
    (
        "create_deployment",
        {**DEPLOY, "configurationId": "cfg-nope"},
        "connectsoft",
        InvalidArgument,
        "UnknownConfiguration",
    ),
    ("create_deployment", DEPLOY, "other", Forbidden, "TenantMismatch"),
    ("create_deployment", {**DEPLOY, "tenantId": "other"}, "other", Forbidden, "TenantMismatch"),
    (
        "apply_scaling",
        {**SCALE, "minReplicas": 21},
        "connectsoft",
        InvalidArgument,
        "InvalidScalingPolicy",
    ),
    (
        "apply_scaling",
        {**SCALE, "targetUtilizationPercent": 101},
        "connectsoft",
        InvalidArgument,
        "InvalidRequest",
    ),
    (
        "apply_scaling",
        {**SCALE, "minReplicas": 0},
        "connectsoft",
        InvalidArgument,
        "InvalidScalingPolicy",
    ),
    (
        "apply_scaling",
        {**SCALE, "minReplicas": 0, "scaleToZero": True},
        "connectsoft",
        InvalidArgument,
        "InvalidScalingPolicy",
    ),
    (
        "apply_scaling",
        {**SCALE, "target": "container-apps"},
        "connectsoft",
        InvalidArgument,
        "InvalidScalingPolicy",
    ),
    (
        "apply_scaling",
        {**SCALE, "serviceId": "module-nope"},
        "connectsoft",
        NotFound,
        "ServiceNotFound",
    ),
    (
        "provision",
        {**PROVISION, "name": "booking-prod-weu"},
        "connectsoft",
        Conflict,
        "EnvironmentExists",
    ),
    ("provision", {**PROVISION, "stage": "qa"}, "connectsoft", InvalidArgument, "InvalidRequest"),
    ("provision", {**PROVISION, "tenantId": "nobody"}, "nobody", Forbidden, "TenantNotBound"),
    ("provision", ["not", "an", "object"], "connectsoft", InvalidArgument, "InvalidRequest"),
]


@pytest.mark.parametrize(("method", "body", "tenant", "error", "code"), BAD_CALLS)
def test_refused_calls_change_nothing(
    state: RuntimeState, method: str, body: Any, tenant: str, error: type[DomainError], code: str
) -> None:
    before = state.events.last_sequence
    counts = (len(state.environments), len(state.deployments))
    with pytest.raises(error) as caught:
        getattr(state, method)(caller(tenant), body, T0)
    assert caught.value.code == code
    assert state.events.last_sequence == before
    assert (len(state.environments), len(state.deployments)) == counts
    assert state.environments[ENV].services["module-reservations-api"].scaling is None


@pytest.mark.parametrize(
    ("scope_missing", "call"),
    [
        ("runtime.environments.read", lambda s, c: s.get_environment(c, ENV)),
        ("runtime.deployments.write", lambda s, c: s.create_deployment(c, DEPLOY, T0)),
        ("runtime.health.read", lambda s, c: s.health(c, "module-reservations-api")),
        ("runtime.drift.read", lambda s, c: s.drift(c, ENV)),
        ("runtime.scaling.write", lambda s, c: s.apply_scaling(c, SCALE, T0)),
        ("runtime.environments.write", lambda s, c: s.provision(c, PROVISION, T0)),
    ],
)
def test_scope_is_checked_first(state: RuntimeState, scope_missing: str, call: Any) -> None:
    from emulator.connectsoft.seed import SCOPES

    narrow = caller(scopes=tuple(s for s in SCOPES if s != scope_missing))
    with pytest.raises(Forbidden) as caught:
        call(state, narrow)
    assert caught.value.code == "InsufficientScope"
    assert caught.value.details == {"requiredScope": scope_missing}


def test_tenants_never_see_each_other(state: RuntimeState) -> None:
    other = caller("other")
    with pytest.raises(Forbidden):
        state.get_environment(other, ENV)
    with pytest.raises(Forbidden):
        state.drift(other, ENV)
    # The same service id in both tenants: each sees its own.
    assert state.health(other, "module-reservations-api").environment_id == "env-0therten"
    assert state.health(caller(), "module-reservations-api").environment_id == ENV
    with pytest.raises(Forbidden):
        state.health(other, "module-reservations-api", ENV)
    with pytest.raises(NotFound):
        state.health(other, "module-billing-worker")
    with pytest.raises(Forbidden):
        state.inventory(caller(), ENV, "other")


def test_health_from_checks_and_faults(state: RuntimeState) -> None:
    service = state.health(caller(), "module-reservations-api")
    assert service.health_status == "Healthy"
    assert [c.name for c in service.effective_checks()] == ["self", "sql", "service-bus"]
    before = state.events.last_sequence
    state.set_unhealthy(ENV, "module-reservations-api", "sql", True, T0 + 1)
    assert service.health_status == "Unhealthy"
    assert service.evaluated_at == T0 + 1
    assert [c.status for c in service.effective_checks()] == ["Healthy", "Unhealthy", "Healthy"]
    state.set_unhealthy(ENV, "module-reservations-api", "sql", False, T0 + 2)
    assert service.health_status == "Healthy"
    assert types_after(state, before) == ["ServiceHealthChanged", "ServiceHealthChanged"]


def test_governance_deny() -> None:
    state = make_state(
        governance=[{"operation": "scaling.write", "decision": "deny", "reason": "Change freeze"}]
    )
    with pytest.raises(GovernanceDenied) as caught:
        state.apply_scaling(caller(), SCALE, T0)
    assert caught.value.message == "Change freeze"
    # Other operations and other stages are not affected.
    state.create_deployment(caller(), DEPLOY, T0)
    state.provision(caller(), PROVISION, T0)


def test_governance_approval_round_trip() -> None:
    state = make_state(
        governance=[{"operation": "deployments.write", "decision": "require_approval"}]
    )
    with pytest.raises(ApprovalRequired) as first:
        state.create_deployment(caller(), DEPLOY, T0)
    approval_id = first.value.details["approvalId"]
    assert approval_id.startswith("apr-")
    # Asking again names the same pending approval.
    with pytest.raises(ApprovalRequired) as again:
        state.create_deployment(caller(), DEPLOY, T0)
    assert again.value.details["approvalId"] == approval_id
    assert state.deployments == {}
    state.grant_approval(approval_id, T0 + 1)
    deployment = state.create_deployment(caller(), DEPLOY, T0 + 2)
    assert state.approvals[approval_id].status.value == "Consumed"
    # One approval lets one change through.
    state.advance(T0 + 100)
    assert deployment.finished
    with pytest.raises(ApprovalRequired) as next_one:
        state.create_deployment(caller(), DEPLOY, T0 + 200)
    assert next_one.value.details["approvalId"] != approval_id


def test_governance_rejection_is_told_once() -> None:
    state = make_state(governance=[{"decision": "require_approval"}])
    with pytest.raises(ApprovalRequired) as first:
        state.apply_scaling(caller(), SCALE, T0)
    approval_id = first.value.details["approvalId"]
    state.reject_approval(approval_id, T0)
    with pytest.raises(GovernanceDenied):
        state.apply_scaling(caller(), SCALE, T0)
    with pytest.raises(ApprovalRequired) as fresh:
        state.apply_scaling(caller(), SCALE, T0)
    assert fresh.value.details["approvalId"] != approval_id


def test_scaling_policy_shows_in_the_inventory(state: RuntimeState) -> None:
    env, policy = state.apply_scaling(caller(), SCALE, T0)
    assert policy.scaling_policy_id.startswith("scl-")
    service = env.services["module-reservations-api"]
    assert service.scaling == policy
    assert service.running is not None
    assert service.running.replicas == 3
    assert state.drift(caller(), ENV)[1] == []


def test_scale_to_zero_on_a_serverless_target(state: RuntimeState) -> None:
    body = {
        **SCALE,
        "serviceId": "module-billing-worker",
        "target": "container-apps",
        "minReplicas": 0,
        "scaleToZero": True,
    }
    _, policy = state.apply_scaling(caller(), body, T0)
    assert policy.scale_to_zero


def test_drift_from_a_rule_and_by_hand(state: RuntimeState) -> None:
    service = state.apply_drift_rule("image-lag", T0 + 300)
    _env, findings = state.drift(caller(), ENV)
    assert [(f.kind, f.desired, f.actual, f.severity) for f in findings] == [
        ("ImageVersionMismatch", "1.4.2", "1.4.1", "High")
    ]
    assert findings[0].finding_id.startswith("drift-")
    assert findings[0].detected_at == T0 + 300
    state.inject_drift(ENV, "module-reservations-api", "ReplicaCountMismatch", "5", None, T0 + 301)
    findings = state.drift(caller(), ENV)[1]
    assert [(f.kind, f.severity) for f in findings] == [
        ("ImageVersionMismatch", "High"),
        ("ReplicaCountMismatch", "Low"),
    ]
    # The image finding kept its id and time.
    assert findings[0].detected_at == T0 + 300
    state.clear_drift(ENV, service.service_id, T0 + 302)
    assert state.drift(caller(), ENV)[1] == []
    assert types_after(state, 0)[-2:] == ["DriftResolved", "DriftResolved"]


def test_a_completed_deployment_clears_drift(state: RuntimeState) -> None:
    state.apply_drift_rule("image-lag", T0)
    state.create_deployment(caller(), DEPLOY, T0)
    # A service being rolled out is not judged.
    assert state.drift(caller(), ENV)[1] == []
    state.advance(T0 + 100)
    assert state.drift(caller(), ENV)[1] == []


def test_seeded_active_drift_rule() -> None:
    rule = {
        "rule_id": "image-lag",
        "environment_id": ENV,
        "service_id": "module-reservations-api",
        "kind": "ImageVersionMismatch",
        "actual": "1.4.1",
        "severity": "Critical",
        "active": True,
    }
    state = make_state(drift_rules=[rule])
    assert [f.severity for f in state.drift(caller(), ENV)[1]] == ["Critical"]


def test_configurations_are_versioned_and_immutable(state: RuntimeState) -> None:
    body = {"tenantId": "connectsoft", "environmentId": ENV, "name": "app", "settings": {"a": 1}}
    first = state.publish_configuration(caller(), body, T0)
    second = state.publish_configuration(caller(), {**body, "settings": {"a": 2}}, T0 + 1)
    assert (first.version, second.version) == (1, 2)
    assert first.configuration_id != second.configuration_id
    assert first.settings == {"a": 1}
    with pytest.raises(AttributeError):
        first.version = 3  # type: ignore[misc]
    deployment = state.create_deployment(
        caller(), {**DEPLOY, "configurationId": first.configuration_id}, T0
    )
    state.advance(T0 + 100)
    running = state.environments[ENV].services["module-reservations-api"].running
    assert running is not None
    assert running.configuration_id == first.configuration_id
    assert deployment.finished


def test_secret_bindings_hold_references_only(state: RuntimeState) -> None:
    body = {
        "tenantId": "connectsoft",
        "environmentId": ENV,
        "serviceId": "module-reservations-api",
        "secrets": [
            {
                "name": "sql-connection",
                "keyVaultRef": "https://booking-kv.vault.azure.net/secrets/sql-connection",
            }
        ],
    }
    binding = state.bind_secrets(caller(), body, T0)
    assert binding.binding_id.startswith("sb-")
    _, rotations = state.request_rotation(caller(), binding.binding_id, {}, T0 + 1)
    assert [r.secret_name for r in rotations] == ["sql-connection"]
    with pytest.raises(NotFound):
        state.request_rotation(caller(), binding.binding_id, {"secretName": "nope"}, T0)
    leaky = {**body, "secrets": [{**body["secrets"][0], "value": "hunter2-top-secret"}]}
    with pytest.raises(InvalidArgument) as caught:
        state.bind_secrets(caller(), leaky, T0)
    assert caught.value.code == "SecretValueRefused"
    assert "hunter2" not in str(caught.value)
    assert all("hunter2" not in str(e.payload) for e in state.events.after(0).events)


def test_tenant_binding_limits_projects() -> None:
    state = make_state(
        tenants=[
            {"tenant_id": "connectsoft", "projects": ["proj-booking-saas"]},
            {"tenant_id": "other"},
        ]
    )
    with pytest.raises(Forbidden) as caught:
        state.provision(caller(), {**PROVISION, "projectId": "proj-elsewhere"}, T0)
    assert caught.value.code == "ProjectNotBound"
    assert state.provision(caller(), PROVISION, T0).project_id == "proj-booking-saas"
