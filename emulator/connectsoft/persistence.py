"""ConnectSoft's durable state for `--state-file`: the runtime state as JSON and back.

Owns `snapshot(state)` (environments with their inventories, deployments with their history,
configurations, secret bindings, approvals, armed faults) and `read_snapshot(data, seed, ids)`,
which checks all of it and builds a fresh `RuntimeState` (ValueError on anything malformed; the
caller's state is untouched until it swaps the result in). Timers are rebuilt from the records'
due times, so a restored deployment moves on where it stopped. The event log is not kept: a
reader resuming with an id from before the restart is told about the gap. The data holds no
secret values (bindings hold references only). Sync: imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .core.events import EventLog
from .core.machines import ApprovalStatus, DeploymentPhase, EnvironmentStatus
from .core.records import (
    Approval,
    Check,
    Configuration,
    Deployment,
    Environment,
    Finding,
    IdFactory,
    Rotation,
    RuntimeService,
    ScalingPolicy,
    SecretBinding,
    StatusChange,
    Workload,
)
from .core.requests import Component, SecretReference
from .core.state import Faults, RuntimeState
from .seed import ConnectSoftSeed

VERSION = 1


def snapshot(state: RuntimeState) -> dict[str, Any]:
    return {
        "version": VERSION,
        "environments": [_environment(env) for env in state.environments.values()],
        "deployments": [_deployment(d) for d in state.deployments.values()],
        "configurations": [
            {
                "configurationId": c.configuration_id,
                "environmentId": c.environment_id,
                "tenantId": c.tenant_id,
                "name": c.name,
                "version": c.version,
                "settings": dict(c.settings),
                "publishedAt": c.published_at,
            }
            for c in state.configurations.values()
        ],
        "bindings": [
            {
                "bindingId": b.binding_id,
                "environmentId": b.environment_id,
                "tenantId": b.tenant_id,
                "serviceId": b.service_id,
                "secrets": [[s.name, s.key_vault_ref] for s in b.secrets],
                "createdAt": b.created_at,
                "rotations": [[r.rotation_id, r.secret_name, r.requested_at] for r in b.rotations],
            }
            for b in state.bindings.values()
        ],
        "approvals": [
            {
                "approvalId": a.approval_id,
                "tenantId": a.tenant_id,
                "operation": a.operation,
                "environmentId": a.environment_id,
                "target": a.target,
                "requestedAt": a.requested_at,
                "status": a.status.value,
                "decidedAt": a.decided_at,
            }
            for a in state.approvals.values()
        ],
        "faults": {
            "failNextProvisioning": state.faults.fail_next_provisioning,
            "failNextHealthGate": state.faults.fail_next_health_gate,
        },
    }


def _workload(workload: Workload | None) -> list[Any] | None:
    if workload is None:
        return None
    return [workload.image, workload.replicas, workload.configuration_id]


def _history(changes: list[StatusChange]) -> list[list[Any]]:
    return [[c.status, c.at, c.reason] for c in changes]


def _environment(env: Environment) -> dict[str, Any]:
    return {
        "environmentId": env.environment_id,
        "tenantId": env.tenant_id,
        "projectId": env.project_id,
        "name": env.name,
        "stage": env.stage,
        "region": env.region,
        "isolationModel": env.isolation_model,
        "computeTargets": list(env.compute_targets),
        "traceId": env.trace_id,
        "createdAt": env.created_at,
        "status": env.status.value,
        "updatedAt": env.updated_at,
        "dueAt": env.due_at,
        "history": _history(env.history),
        "services": [_service(s) for s in env.services.values()],
    }


def _service(service: RuntimeService) -> dict[str, Any]:
    scaling = service.scaling
    return {
        "serviceId": service.service_id,
        "target": service.target,
        "deployed": _workload(service.deployed),
        "running": _workload(service.running),
        "checks": [[c.name, c.status, c.duration_ms] for c in service.checks],
        "healthStatus": service.health_status,
        "evaluatedAt": service.evaluated_at,
        "scaling": None
        if scaling is None
        else [
            scaling.scaling_policy_id,
            scaling.target,
            scaling.metric,
            scaling.min_replicas,
            scaling.max_replicas,
            scaling.target_utilization_percent,
            scaling.scale_to_zero,
            scaling.applied_at,
        ],
        "forcedUnhealthy": sorted(service.forced_unhealthy),
        "deploying": service.deploying,
        "driftSeverity": dict(service.drift_severity),
        "findings": [
            [f.finding_id, f.kind, f.desired, f.actual, f.severity, f.detected_at]
            for f in service.findings.values()
        ],
    }


def _deployment(d: Deployment) -> dict[str, Any]:
    return {
        "deploymentId": d.deployment_id,
        "environmentId": d.environment_id,
        "tenantId": d.tenant_id,
        "releaseRef": d.release_ref,
        "components": [[c.module_id, c.image, c.target] for c in d.components],
        "configurationId": d.configuration_id,
        "strategy": d.strategy,
        "traceId": d.trace_id,
        "createdAt": d.created_at,
        "phase": d.phase.value,
        "updatedAt": d.updated_at,
        "dueAt": d.due_at,
        "history": _history(d.history),
        "previous": {k: _workload(v) for k, v in d.previous.items()},
    }


# Reading back -------------------------------------------------------------------------------


def _get(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"expected an object around {key!r}")
    value = data[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ValueError(f"{key} has the wrong type")
    if not isinstance(value, kind):
        raise ValueError(f"{key} has the wrong type")
    return value


def _text(data: Mapping[str, Any], key: str) -> str:
    return str(_get(data, key, str))


def _opt_text(data: Mapping[str, Any], key: str) -> str | None:
    value = _get(data, key, (str, type(None)))
    return None if value is None else str(value)


def _number(data: Mapping[str, Any], key: str) -> float:
    return float(_get(data, key, (int, float)))


def _opt_number(data: Mapping[str, Any], key: str) -> float | None:
    value = data[key]
    return None if value is None else _number(data, key)


def _read_workload(value: Any) -> Workload | None:
    if value is None:
        return None
    image, replicas, configuration = value
    if not isinstance(image, str) or not isinstance(replicas, int):
        raise ValueError("a workload is [image, replicas, configurationId]")
    if configuration is not None and not isinstance(configuration, str):
        raise ValueError("a workload's configurationId is a string")
    return Workload(image, replicas, configuration)


def _read_history(value: Any) -> list[StatusChange]:
    changes = []
    for status, at, reason in value:
        if not isinstance(status, str) or not isinstance(at, int | float):
            raise ValueError("a history entry is [status, at, reason]")
        changes.append(StatusChange(status, float(at), None if reason is None else str(reason)))
    return changes


def _read_service(data: Mapping[str, Any], environment_id: str) -> RuntimeService:
    scaling = data["scaling"]
    policy = None
    if scaling is not None:
        policy_id, target, metric, low, high, percent, to_zero, applied = scaling
        policy = ScalingPolicy(
            str(policy_id),
            str(target),
            str(metric),
            int(low),
            int(high),
            int(percent),
            bool(to_zero),
            float(applied),
        )
    findings = {}
    for finding_id, kind, desired, actual, severity, detected in data["findings"]:
        findings[str(kind)] = Finding(
            str(finding_id), str(kind), str(desired), str(actual), str(severity), float(detected)
        )
    severity = _get(data, "driftSeverity", dict)
    return RuntimeService(
        service_id=_text(data, "serviceId"),
        environment_id=environment_id,
        target=_text(data, "target"),
        deployed=_read_workload(data["deployed"]),
        running=_read_workload(data["running"]),
        checks=tuple(
            Check(str(name), str(status), None if ms is None else int(ms))
            for name, status, ms in data["checks"]
        ),
        health_status=_text(data, "healthStatus"),
        evaluated_at=_number(data, "evaluatedAt"),
        scaling=policy,
        forced_unhealthy=frozenset(str(n) for n in _get(data, "forcedUnhealthy", list)),
        deploying=_opt_text(data, "deploying"),
        drift_severity={str(k): str(v) for k, v in severity.items()},
        findings=findings,
    )


def read_snapshot(data: Any, seed: ConnectSoftSeed, ids: IdFactory) -> RuntimeState:
    """A new state from `snapshot`'s data; ValueError (or KeyError/TypeError) if malformed."""
    if not isinstance(data, Mapping) or data.get("version") != VERSION:
        raise ValueError(f"not ConnectSoft state of version {VERSION}")
    state = RuntimeState(seed, ids, EventLog(seed.event_retention))
    for item in _get(data, "environments", list):
        env_id = _text(item, "environmentId")
        env = Environment(
            environment_id=env_id,
            tenant_id=_text(item, "tenantId"),
            project_id=_text(item, "projectId"),
            name=_text(item, "name"),
            stage=_text(item, "stage"),
            region=_text(item, "region"),
            isolation_model=_text(item, "isolationModel"),
            compute_targets=tuple(str(t) for t in _get(item, "computeTargets", list)),
            trace_id=_text(item, "traceId"),
            created_at=_number(item, "createdAt"),
            status=EnvironmentStatus(_text(item, "status")),
            updated_at=_number(item, "updatedAt"),
            due_at=_opt_number(item, "dueAt"),
            history=_read_history(item["history"]),
        )
        for service_data in _get(item, "services", list):
            service = _read_service(service_data, env_id)
            env.services[service.service_id] = service
        state.environments[env_id] = env
    for item in _get(data, "deployments", list):
        environment_id = _text(item, "environmentId")
        if environment_id not in state.environments:
            raise ValueError(f"deployment of an unknown environment {environment_id}")
        deployment = Deployment(
            deployment_id=_text(item, "deploymentId"),
            environment_id=environment_id,
            tenant_id=_text(item, "tenantId"),
            release_ref=_text(item, "releaseRef"),
            components=tuple(
                Component(str(m), str(i), str(t)) for m, i, t in _get(item, "components", list)
            ),
            configuration_id=_opt_text(item, "configurationId"),
            strategy=_text(item, "strategy"),
            trace_id=_text(item, "traceId"),
            created_at=_number(item, "createdAt"),
            phase=DeploymentPhase(_text(item, "phase")),
            updated_at=_number(item, "updatedAt"),
            due_at=_opt_number(item, "dueAt"),
            history=_read_history(item["history"]),
            previous={str(k): _read_workload(v) for k, v in _get(item, "previous", dict).items()},
        )
        state.deployments[deployment.deployment_id] = deployment
    for item in _get(data, "configurations", list):
        settings = _get(item, "settings", dict)
        configuration = Configuration(
            configuration_id=_text(item, "configurationId"),
            environment_id=_text(item, "environmentId"),
            tenant_id=_text(item, "tenantId"),
            name=_text(item, "name"),
            version=int(_get(item, "version", int)),
            settings={str(k): v for k, v in settings.items()},
            published_at=_number(item, "publishedAt"),
        )
        state.configurations[configuration.configuration_id] = configuration
    for item in _get(data, "bindings", list):
        binding = SecretBinding(
            binding_id=_text(item, "bindingId"),
            environment_id=_text(item, "environmentId"),
            tenant_id=_text(item, "tenantId"),
            service_id=_text(item, "serviceId"),
            secrets=tuple(SecretReference(str(n), str(r)) for n, r in item["secrets"]),
            created_at=_number(item, "createdAt"),
            rotations=[Rotation(str(i), str(n), float(at)) for i, n, at in item["rotations"]],
        )
        state.bindings[binding.binding_id] = binding
    for item in _get(data, "approvals", list):
        approval = Approval(
            approval_id=_text(item, "approvalId"),
            tenant_id=_text(item, "tenantId"),
            operation=_text(item, "operation"),
            environment_id=_opt_text(item, "environmentId"),
            target=_text(item, "target"),
            requested_at=_number(item, "requestedAt"),
            status=ApprovalStatus(_text(item, "status")),
            decided_at=_opt_number(item, "decidedAt"),
        )
        state.approvals[approval.approval_id] = approval
    faults = _get(data, "faults", dict)
    state.faults = Faults(
        int(_get(faults, "failNextProvisioning", int)), int(_get(faults, "failNextHealthGate", int))
    )
    state.rebuild_indexes()
    return state
