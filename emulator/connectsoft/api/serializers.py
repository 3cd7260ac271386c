"""Core records as the JSON of the source's examples, and as the gRPC messages.

Owns every wire shape of a core record: the exact keys of the source's five examples (a
provision answer has `environmentId`, `status`, `traceId`, `pulumiStackRef` and nothing else),
the emulator's own shapes where the source shows none (GET environment and deployment,
configurations, secret bindings, approvals) and the protobuf messages of the three RPCs. Core
records never know their JSON. Imports the core and the protos; nothing from quart or trio.
"""

from __future__ import annotations

from typing import Any

from ..core.events import iso
from ..core.machines import deployment_status
from ..core.records import (
    Approval,
    Check,
    Configuration,
    Deployment,
    Environment,
    Finding,
    Rotation,
    RuntimeService,
    ScalingPolicy,
    SecretBinding,
)
from ..core.requests import image_tag
from ..engine import HealthSnapshot
from ..protos import (
    GetFindingsResponse,
    GetServicesResponse,
    HealthUpdate,
)


def provisioned(env: Environment) -> dict[str, Any]:
    return {
        "environmentId": env.environment_id,
        "status": env.status.value,
        "traceId": env.trace_id,
        "pulumiStackRef": env.pulumi_stack_ref,
    }


def environment(env: Environment) -> dict[str, Any]:
    return {
        **provisioned(env),
        "tenantId": env.tenant_id,
        "projectId": env.project_id,
        "name": env.name,
        "stage": env.stage,
        "region": env.region,
        "isolationModel": env.isolation_model,
        "computeTargets": list(env.compute_targets),
        "createdAt": iso(env.created_at),
        "updatedAt": iso(env.updated_at),
        "history": [_change(c.status, c.at, c.reason) for c in env.history],
        "inventory": {
            "services": [inventory_service(s) for s in env.services.values()],
        },
    }


def inventory_service(service: RuntimeService) -> dict[str, Any]:
    running = service.running
    deployed = service.deployed
    return {
        "serviceId": service.service_id,
        "target": service.target,
        "image": None if running is None else running.image,
        "version": None if running is None else image_tag(running.image),
        "deployedImage": None if deployed is None else deployed.image,
        "replicas": None if running is None else running.replicas,
        "configurationId": None if running is None else running.configuration_id,
        "health": service.health_status,
        "deploymentId": service.deploying,
        "scalingPolicy": None if service.scaling is None else scaling_policy(service.scaling),
        "driftFindings": len(service.findings),
    }


def scaling_policy(policy: ScalingPolicy) -> dict[str, Any]:
    return {
        "scalingPolicyId": policy.scaling_policy_id,
        "target": policy.target,
        "metric": policy.metric,
        "minReplicas": policy.min_replicas,
        "maxReplicas": policy.max_replicas,
        "targetUtilizationPercent": policy.target_utilization_percent,
        "scaleToZero": policy.scale_to_zero,
        "appliedAt": iso(policy.applied_at),
    }


def scaling_applied(env: Environment, policy: ScalingPolicy) -> dict[str, Any]:
    return {
        "scalingPolicyId": policy.scaling_policy_id,
        "status": "Applied",
        "traceId": env.trace_id,
    }


def deployment_accepted(deployment: Deployment) -> dict[str, Any]:
    return {
        "deploymentId": deployment.deployment_id,
        "status": deployment_status(deployment.phase),
        "traceId": deployment.trace_id,
    }


def deployment(record: Deployment) -> dict[str, Any]:
    return {
        **deployment_accepted(record),
        "phase": record.phase.value,
        "tenantId": record.tenant_id,
        "environmentId": record.environment_id,
        "releaseRef": record.release_ref,
        "strategy": record.strategy,
        "configurationId": record.configuration_id,
        "components": [
            {"moduleId": c.module_id, "image": c.image, "target": c.target}
            for c in record.components
        ],
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        "rolloutHistory": [_change(c.status, c.at, c.reason, key="phase") for c in record.history],
    }


def _change(status: str, at: float, reason: str | None, *, key: str = "status") -> dict[str, Any]:
    entry: dict[str, Any] = {key: status, "at": iso(at)}
    if reason is not None:
        entry["reason"] = reason
    return entry


def configuration(record: Configuration, trace_id: str) -> dict[str, Any]:
    return {
        "configurationId": record.configuration_id,
        "environmentId": record.environment_id,
        "name": record.name,
        "version": record.version,
        "status": "Published",
        "settings": dict(record.settings),
        "publishedAt": iso(record.published_at),
        "traceId": trace_id,
    }


def secret_binding(binding: SecretBinding, trace_id: str) -> dict[str, Any]:
    return {
        "secretBindingId": binding.binding_id,
        "environmentId": binding.environment_id,
        "serviceId": binding.service_id,
        "status": "Bound",
        "secrets": [{"name": s.name, "keyVaultRef": s.key_vault_ref} for s in binding.secrets],
        "traceId": trace_id,
    }


def rotations(binding: SecretBinding, items: tuple[Rotation, ...]) -> dict[str, Any]:
    return {
        "secretBindingId": binding.binding_id,
        "rotations": [
            {
                "rotationId": r.rotation_id,
                "secretName": r.secret_name,
                "status": r.status,
                "requestedAt": iso(r.requested_at),
            }
            for r in items
        ],
    }


def check(item: Check) -> dict[str, Any]:
    body: dict[str, Any] = {"name": item.name, "status": item.status}
    if item.duration_ms is not None:
        body["durationMs"] = item.duration_ms
    return body


def health(service: RuntimeService) -> dict[str, Any]:
    return {
        "serviceId": service.service_id,
        "environmentId": service.environment_id,
        "status": service.health_status,
        "checks": [check(c) for c in service.effective_checks()],
        "evaluatedAt": iso(service.evaluated_at),
    }


def finding(item: Finding, service_id: str) -> dict[str, Any]:
    return {
        "findingId": item.finding_id,
        "serviceId": service_id,
        "kind": item.kind,
        "desired": item.desired,
        "actual": item.actual,
        "severity": item.severity,
        "detectedAt": iso(item.detected_at),
    }


def drift(env: Environment, findings: list[Finding]) -> dict[str, Any]:
    owner = {id(f): s.service_id for s in env.services.values() for f in s.findings.values()}
    return {
        "environmentId": env.environment_id,
        "findings": [finding(f, owner[id(f)]) for f in findings],
    }


def approval(record: Approval) -> dict[str, Any]:
    return {
        "approvalId": record.approval_id,
        "tenantId": record.tenant_id,
        "operation": record.operation,
        "environmentId": record.environment_id,
        "target": record.target,
        "status": record.status.value,
        "requestedAt": iso(record.requested_at),
        "decidedAt": None if record.decided_at is None else iso(record.decided_at),
    }


# gRPC messages ------------------------------------------------------------------------------


def services_message(env: Environment) -> Any:
    message = GetServicesResponse(
        environment_id=env.environment_id, tenant_id=env.tenant_id, status=env.status.value
    )
    for service in env.services.values():
        item = message.services.add(
            service_id=service.service_id,
            environment_id=env.environment_id,
            target=service.target,
            health_status=service.health_status,
        )
        if service.running is not None:
            item.image = service.running.image
            item.version = image_tag(service.running.image)
            item.replicas = service.running.replicas
            item.configuration_id = service.running.configuration_id or ""
        if service.scaling is not None:
            policy = service.scaling
            item.scaling.scaling_policy_id = policy.scaling_policy_id
            item.scaling.metric = policy.metric
            item.scaling.min_replicas = policy.min_replicas
            item.scaling.max_replicas = policy.max_replicas
            item.scaling.target_utilization_percent = policy.target_utilization_percent
            item.scaling.scale_to_zero = policy.scale_to_zero
    return message


def health_message(snapshot: HealthSnapshot) -> Any:
    message = HealthUpdate(
        service_id=snapshot.service_id,
        environment_id=snapshot.environment_id,
        status=snapshot.status,
        evaluated_at=iso(snapshot.evaluated_at),
    )
    for item in snapshot.checks:
        entry = message.checks.add(name=item.name, status=item.status)
        if item.duration_ms is not None:
            entry.duration_ms = item.duration_ms
    return message


def findings_message(env: Environment, findings: list[Finding]) -> Any:
    message = GetFindingsResponse(environment_id=env.environment_id)
    for item in drift(env, findings)["findings"]:
        message.findings.add(
            finding_id=item["findingId"],
            service_id=item["serviceId"],
            kind=item["kind"],
            desired=item["desired"],
            actual=item["actual"],
            severity=item["severity"],
            detected_at=item["detectedAt"],
        )
    return message
