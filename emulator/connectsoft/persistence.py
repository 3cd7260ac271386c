"""ConnectSoft's durable state for `--state-file`: the runtime state as JSON and back.

Owns `snapshot(state)` (environments with their inventories, deployments with their history,
configurations, secret bindings, approvals, armed faults) and `read_snapshot(data, seed, ids)`,
which checks all of it with the platform's JSON-with-path reader and builds a fresh
`RuntimeState` (ValueError naming the path of anything malformed; the caller's state is
untouched until it swaps the result in). Timers are rebuilt from the records'
due times, so a restored deployment moves on where it stopped. The event log is not kept: a
reader resuming with an id from before the restart is told about the gap. The data holds no
secret values (bindings hold references only). Sync: imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..platform.seedschema import Node, plain_failure
from .core.events import EventLog
from .core.machines import (
    DEPLOYMENT_MACHINE,
    ApprovalStatus,
    DeploymentPhase,
    EnvironmentStatus,
)
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
T = TypeVar("T")


def snapshot(state: RuntimeState) -> dict[str, Any]:
    return capture(state)()


def capture(state: RuntimeState, *, lazy: bool = False) -> Callable[[], dict[str, Any]]:
    """`snapshot` in two halves. On the event loop: everything but the deployments that have
    finished (Completed or RolledBack: nothing changes them any more, and a load test may
    keep up to 100,000). The returned function renders those, in the save's worker thread.
    `lazy`: the deployments as a generator for the state file's writer."""
    ended = DEPLOYMENT_MACHINE.terminal
    deployments = [d if d.phase in ended else _deployment(d) for d in state.deployments.values()]
    head = _other_sections(state)

    def finish() -> dict[str, Any]:
        rendered = (d if isinstance(d, dict) else _deployment(d) for d in deployments)
        return {**head, "deployments": rendered if lazy else list(rendered)}

    return finish


def _other_sections(state: RuntimeState) -> dict[str, Any]:
    return {
        "version": VERSION,
        "environments": [_environment(env) for env in state.environments.values()],
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


# Reading back (with the platform's JSON-with-path reader) ---------------------------------------


def _tuple(node: Node, size: int, what: str) -> list[Node]:
    items = node.as_list()
    if len(items) != size:
        raise node.error(f"{what} has {size} items")
    return items


def _opt(node: Node, read: Callable[[Node], T]) -> T | None:
    return None if node.value is None else read(node)


def _text(node: Node) -> str:
    return node.as_str(allow_empty=True)


def _read_workload(node: Node) -> Workload | None:
    if node.value is None:
        return None
    image, replicas, configuration = _tuple(
        node, 3, "a workload [image, replicas, configurationId]"
    )
    return Workload(image.as_str(), replicas.as_int(minimum=0), _opt(configuration, _text))


def _read_history(node: Node) -> list[StatusChange]:
    changes = []
    for item in node.as_list():
        status, at, reason = _tuple(item, 3, "a history entry [status, at, reason]")
        changes.append(StatusChange(status.as_str(), at.as_float(), _opt(reason, _text)))
    return changes


def _read_policy(node: Node) -> ScalingPolicy:
    policy_id, target, metric, low, high, percent, to_zero, applied = _tuple(
        node, 8, "a scaling policy"
    )
    return ScalingPolicy(
        policy_id.as_str(),
        target.as_str(),
        metric.as_str(),
        low.as_int(minimum=0),
        high.as_int(minimum=1),
        percent.as_int(minimum=1),
        to_zero.as_bool(),
        applied.as_float(),
    )


def _read_finding(node: Node) -> Finding:
    finding_id, kind, desired, actual, severity, detected = _tuple(node, 6, "a finding")
    return Finding(
        finding_id.as_str(),
        kind.as_str(),
        _text(desired),
        _text(actual),
        severity.as_str(),
        detected.as_float(),
    )


def _read_check(node: Node) -> Check:
    name, status, duration = _tuple(node, 3, "a check [name, status, durationMs]")
    return Check(name.as_str(), status.as_str(), _opt(duration, lambda n: n.as_int(minimum=0)))


def _read_service(node: Node, environment_id: str) -> RuntimeService:
    f = node.fields(required=_SERVICE_KEYS)
    findings = [_read_finding(item) for item in f.list("findings")]
    return RuntimeService(
        service_id=f.str("serviceId"),
        environment_id=environment_id,
        target=f.str("target"),
        deployed=_read_workload(f["deployed"]),
        running=_read_workload(f["running"]),
        checks=tuple(_read_check(item) for item in f.list("checks")),
        health_status=f.str("healthStatus"),
        evaluated_at=f.float("evaluatedAt"),
        scaling=_opt(f["scaling"], _read_policy),
        forced_unhealthy=frozenset(f.str_list("forcedUnhealthy")),
        deploying=_opt(f["deploying"], _text),
        drift_severity={key: value.as_str() for key, value in f["driftSeverity"].as_items()},
        findings={finding.kind: finding for finding in findings},
    )


_SERVICE_KEYS = (
    "serviceId",
    "target",
    "deployed",
    "running",
    "checks",
    "healthStatus",
    "evaluatedAt",
    "scaling",
    "forcedUnhealthy",
    "deploying",
    "driftSeverity",
    "findings",
)
_ENVIRONMENT_KEYS = (
    "environmentId",
    "tenantId",
    "projectId",
    "name",
    "stage",
    "region",
    "isolationModel",
    "computeTargets",
    "traceId",
    "createdAt",
    "status",
    "updatedAt",
    "dueAt",
    "history",
    "services",
)
_DEPLOYMENT_KEYS = (
    "deploymentId",
    "environmentId",
    "tenantId",
    "releaseRef",
    "components",
    "configurationId",
    "strategy",
    "traceId",
    "createdAt",
    "phase",
    "updatedAt",
    "dueAt",
    "history",
    "previous",
)


def _read_environment(node: Node) -> Environment:
    f = node.fields(required=_ENVIRONMENT_KEYS)
    env_id = f.str("environmentId")
    env = Environment(
        environment_id=env_id,
        tenant_id=f.str("tenantId"),
        project_id=f.str("projectId"),
        name=f.str("name"),
        stage=f.str("stage"),
        region=f.str("region"),
        isolation_model=f.str("isolationModel"),
        compute_targets=f.str_list("computeTargets"),
        trace_id=f.str("traceId"),
        created_at=f.float("createdAt"),
        status=f.choice("status", EnvironmentStatus),
        updated_at=f.float("updatedAt"),
        due_at=f.opt_float("dueAt"),
        history=_read_history(f["history"]),
    )
    for item in f.list("services"):
        service = _read_service(item, env_id)
        env.services[service.service_id] = service
    return env


def _read_component(node: Node) -> Component:
    module_id, image, target = _tuple(node, 3, "a component [moduleId, image, target]")
    return Component(module_id.as_str(), image.as_str(), target.as_str())


def _read_deployment(node: Node, environments: Mapping[str, Environment]) -> Deployment:
    f = node.fields(required=_DEPLOYMENT_KEYS)
    environment_id = f.str("environmentId")
    if environment_id not in environments:
        raise f["environmentId"].error(f"no saved environment {environment_id}")
    return Deployment(
        deployment_id=f.str("deploymentId"),
        environment_id=environment_id,
        tenant_id=f.str("tenantId"),
        release_ref=f.str("releaseRef"),
        components=tuple(_read_component(item) for item in f.list("components")),
        configuration_id=f.opt_str("configurationId"),
        strategy=f.str("strategy"),
        trace_id=f.str("traceId"),
        created_at=f.float("createdAt"),
        phase=f.choice("phase", DeploymentPhase),
        updated_at=f.float("updatedAt"),
        due_at=f.opt_float("dueAt"),
        history=_read_history(f["history"]),
        previous={key: _read_workload(value) for key, value in f["previous"].as_items()},
    )


def _read_configuration(node: Node) -> Configuration:
    f = node.fields(
        required=(
            "configurationId",
            "environmentId",
            "tenantId",
            "name",
            "version",
            "settings",
            "publishedAt",
        )
    )
    settings: dict[str, str | int | float | bool] = {}
    for key, value in f["settings"].as_items():
        if isinstance(value.value, bool | int | float | str):
            settings[key] = value.value
        else:
            raise value.error("a setting is a string, number or boolean")
    return Configuration(
        configuration_id=f.str("configurationId"),
        environment_id=f.str("environmentId"),
        tenant_id=f.str("tenantId"),
        name=f.str("name"),
        version=f.int("version", minimum=1),
        settings=settings,
        published_at=f.float("publishedAt"),
    )


def _read_binding(node: Node) -> SecretBinding:
    f = node.fields(
        required=(
            "bindingId",
            "environmentId",
            "tenantId",
            "serviceId",
            "secrets",
            "createdAt",
            "rotations",
        )
    )
    secrets = []
    for item in f.list("secrets"):
        name, ref = _tuple(item, 2, "a secret [name, keyVaultRef]")
        secrets.append(SecretReference(name.as_str(), ref.as_str()))
    rotations = []
    for item in f.list("rotations"):
        rotation_id, name, at = _tuple(item, 3, "a rotation [rotationId, secretName, at]")
        rotations.append(Rotation(rotation_id.as_str(), name.as_str(), at.as_float()))
    return SecretBinding(
        binding_id=f.str("bindingId"),
        environment_id=f.str("environmentId"),
        tenant_id=f.str("tenantId"),
        service_id=f.str("serviceId"),
        secrets=tuple(secrets),
        created_at=f.float("createdAt"),
        rotations=rotations,
    )


def _read_approval(node: Node) -> Approval:
    f = node.fields(
        required=(
            "approvalId",
            "tenantId",
            "operation",
            "environmentId",
            "target",
            "requestedAt",
            "status",
            "decidedAt",
        )
    )
    return Approval(
        approval_id=f.str("approvalId"),
        tenant_id=f.str("tenantId"),
        operation=f.str("operation"),
        environment_id=f.opt_str("environmentId"),
        target=f.str("target"),
        requested_at=f.float("requestedAt"),
        status=f.choice("status", ApprovalStatus),
        decided_at=f.opt_float("decidedAt"),
    )


def read_snapshot(data: Any, seed: ConnectSoftSeed, ids: IdFactory) -> RuntimeState:
    """A new state from `snapshot`'s data; ValueError naming the path of a malformed value."""
    root = Node(data, "connectsoft", "", plain_failure)
    f = root.fields(
        required=(
            "version",
            "environments",
            "deployments",
            "configurations",
            "bindings",
            "approvals",
            "faults",
        )
    )
    if f["version"].value != VERSION:
        raise f["version"].error(f"must be {VERSION}")
    state = RuntimeState(seed, ids, EventLog(seed.event_retention))
    for item in f.list("environments"):
        env = _read_environment(item)
        state.environments[env.environment_id] = env
    for item in f.list("deployments"):
        deployment = _read_deployment(item, state.environments)
        state.deployments[deployment.deployment_id] = deployment
    for item in f.list("configurations"):
        configuration = _read_configuration(item)
        state.configurations[configuration.configuration_id] = configuration
    for item in f.list("bindings"):
        binding = _read_binding(item)
        state.bindings[binding.binding_id] = binding
    for item in f.list("approvals"):
        approval = _read_approval(item)
        state.approvals[approval.approval_id] = approval
    faults = f["faults"].fields(required=("failNextProvisioning", "failNextHealthGate"))
    state.faults = Faults(
        faults.int("failNextProvisioning", minimum=0), faults.int("failNextHealthGate", minimum=0)
    )
    state.rebuild_indexes()
    return state
