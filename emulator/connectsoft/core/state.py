"""The runtime platform's state: every call of the REST and gRPC surface and every timer step.

Owns `RuntimeState`: environments and their inventories, deployments, configurations, secret
bindings, scaling policies, health, drift findings, the governance gate with its approvals, the
armed faults, the timer heap that moves state machines on (`advance(now)`, `next_due()`) and the
event log every state change is appended to.

Every caller-facing method runs in the same order: scope, request shape, the target's tenant
binding, checks against the state, the governance gate, and only then a mutation, so a refused
call changes nothing (the one exception: a governance "require approval" answer records the
approval request it names). Timed steps happen at their due time, not at the time `advance` is
called, so their events and history carry exact times. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import attrs

from ..seed import ConnectSoftSeed, DriftRuleSeed, EnvironmentSeed
from .access import Caller, decide
from .errors import (
    ApprovalRequired,
    Conflict,
    Forbidden,
    GovernanceDenied,
    InvalidArgument,
    NotFound,
)
from .events import EventLog
from .machines import (
    APPROVAL_MACHINE,
    ApprovalStatus,
    ApprovalTrigger,
    DeploymentPhase,
    DeploymentTrigger,
    EnvironmentStatus,
    EnvironmentTrigger,
)
from .records import (
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
from .requests import (
    Component,
    ConfigurationRequest,
    DeploymentRequest,
    ProvisionRequest,
    RotationRequest,
    ScalingRequest,
    SecretBindingRequest,
    image_tag,
    with_tag,
)

DEFAULT_SEVERITY = {
    "ImageVersionMismatch": "High",
    "ConfigurationMismatch": "Medium",
    "ReplicaCountMismatch": "Low",
}
MAX_ENVIRONMENTS = 10_000
MAX_DEPLOYMENTS = 100_000
MAX_APPROVALS = 10_000


@attrs.define
class Faults:
    fail_next_provisioning: int = 0
    fail_next_health_gate: int = 0


@attrs.define
class RuntimeState:
    seed: ConnectSoftSeed
    ids: IdFactory
    events: EventLog
    environments: dict[str, Environment] = attrs.field(factory=dict)
    deployments: dict[str, Deployment] = attrs.field(factory=dict)
    configurations: dict[str, Configuration] = attrs.field(factory=dict)
    bindings: dict[str, SecretBinding] = attrs.field(factory=dict)
    approvals: dict[str, Approval] = attrs.field(factory=dict)
    faults: Faults = attrs.field(factory=Faults)
    # serviceId -> the environments holding a service of that id.
    _service_index: dict[str, set[str]] = attrs.field(factory=dict)
    _open_approvals: dict[tuple[str, str, str], str] = attrs.field(factory=dict)
    _config_versions: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _timers: list[tuple[float, int, str, str]] = attrs.field(factory=list)
    _timer_seq: int = 0

    @classmethod
    def from_seed(cls, seed: ConnectSoftSeed, ids: IdFactory, now: float) -> RuntimeState:
        state = cls(seed, ids, EventLog(seed.event_retention))
        for env_seed in seed.environments:
            state._seed_environment(env_seed, now)
        for rule in seed.drift_rules:
            if rule.active:
                state._inject_drift(
                    rule.environment_id, rule.service_id, rule.kind, rule.actual, rule.severity, now
                )
        state.faults = Faults(seed.faults.fail_next_provisioning, seed.faults.fail_next_health_gate)
        for env_id, service_id in seed.faults.unhealthy_services:
            state.set_unhealthy(env_id, service_id, None, True, now)
        return state

    def rebuild_indexes(self) -> None:
        """Derive the lookups and the timer heap from the records (after a restore)."""
        self._service_index = {}
        for env in self.environments.values():
            for service_id in env.services:
                self._service_index.setdefault(service_id, set()).add(env.environment_id)
        self._open_approvals = {
            (a.tenant_id, a.operation.removeprefix("runtime."), a.target): a.approval_id
            for a in self.approvals.values()
            if a.status in (ApprovalStatus.PENDING, ApprovalStatus.GRANTED)
        }
        self._config_versions = {}
        for c in self.configurations.values():
            key = (c.environment_id, c.name)
            self._config_versions[key] = max(self._config_versions.get(key, 0), c.version)
        self._timers = []
        for env in self.environments.values():
            if env.due_at is not None:
                self._push_timer(env.due_at, "env", env.environment_id)
        for deployment in self.deployments.values():
            if deployment.due_at is not None:
                self._push_timer(deployment.due_at, "dep", deployment.deployment_id)

    def _seed_environment(self, s: EnvironmentSeed, now: float) -> None:
        status = EnvironmentStatus.PROVISIONING
        env = Environment(
            environment_id=s.environment_id,
            tenant_id=s.tenant_id,
            project_id=s.project_id,
            name=s.name,
            stage=s.stage,
            region=s.region,
            isolation_model=s.isolation_model,
            compute_targets=s.compute_targets,
            trace_id="trace-" + s.environment_id.removeprefix("env-"),
            created_at=now,
            status=status,
            updated_at=now,
        )
        env.history.append(StatusChange(status.value, now, "seeded"))
        trigger = (
            EnvironmentTrigger.PROVISIONED
            if s.status == "Active"
            else EnvironmentTrigger.PROVISIONING_FAILED
        )
        env.apply(trigger, now, "seeded")
        self.environments[env.environment_id] = env
        for service_seed in s.services:
            workload = Workload(
                service_seed.image, service_seed.replicas, service_seed.configuration_id
            )
            checks = tuple(Check(c.name, c.status, c.duration_ms) for c in service_seed.checks)
            self._add_service(
                env, service_seed.service_id, service_seed.target, workload, checks, now
            )

    # Reading ------------------------------------------------------------------------------

    def get_environment(self, caller: Caller, environment_id: str) -> Environment:
        _authorize(caller, "runtime.environments.read")
        return self._environment_for(caller, "runtime.environments.read", environment_id)

    def inventory(self, caller: Caller, environment_id: str, tenant_id: str) -> Environment:
        """GetServices(environmentId, tenantId): the tenant given must be the caller's own."""
        _authorize(caller, "runtime.environments.read")
        decide(caller, "runtime.environments.read", tenant_id or None).raise_if_refused()
        return self._environment_for(caller, "runtime.environments.read", environment_id)

    def get_deployment(self, caller: Caller, deployment_id: str) -> Deployment:
        _authorize(caller, "runtime.deployments.read")
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            raise NotFound("DeploymentNotFound", f"Deployment {deployment_id} does not exist.")
        decide(caller, "runtime.deployments.read", deployment.tenant_id).raise_if_refused()
        return deployment

    def health(
        self, caller: Caller, service_id: str, environment_id: str | None = None
    ) -> RuntimeService:
        _authorize(caller, "runtime.health.read")
        return self.find_service(caller, "runtime.health.read", service_id, environment_id)

    def find_service(
        self, caller: Caller, scope: str, service_id: str, environment_id: str | None
    ) -> RuntimeService:
        if environment_id is not None:
            env = self._environment_for(caller, scope, environment_id)
            service = env.services.get(service_id)
            if service is None:
                raise NotFound(
                    "ServiceNotFound",
                    f"Service {service_id} is not in environment {environment_id}.",
                )
            return service
        # Only the caller's tenant's environments are looked at: another tenant's service of the
        # same id is neither seen nor hinted at.
        candidates = [
            self.environments[env_id]
            for env_id in sorted(self._service_index.get(service_id, ()))
            if self.environments[env_id].tenant_id == caller.tenant_id
        ]
        if not candidates:
            raise NotFound("ServiceNotFound", f"Service {service_id} does not exist.")
        if len(candidates) > 1:
            names = ", ".join(env.environment_id for env in candidates)
            raise InvalidArgument(
                "AmbiguousService",
                f"Service {service_id} runs in several environments ({names}); "
                "pass environmentId to choose one.",
                {"field": "environmentId"},
            )
        return candidates[0].services[service_id]

    def drift(self, caller: Caller, environment_id: str) -> tuple[Environment, list[Finding]]:
        _authorize(caller, "runtime.drift.read")
        env = self._environment_for(caller, "runtime.drift.read", environment_id)
        findings = [
            finding for service in env.services.values() for finding in service.findings.values()
        ]
        findings.sort(key=lambda f: (f.detected_at, f.finding_id))
        return env, findings

    # Environments -------------------------------------------------------------------------

    def provision(self, caller: Caller, body: Any, now: float) -> Environment:
        scope = "runtime.environments.write"
        _authorize(caller, scope)
        request = ProvisionRequest.from_json(body)
        decide(caller, scope, request.tenant_id).raise_if_refused()
        self._check_tenant_binding(request.tenant_id, request.project_id)
        if any(env.name == request.name for env in self.environments.values()):
            raise Conflict(
                "EnvironmentExists", f"An environment named {request.name} already exists."
            )
        if len(self.environments) >= MAX_ENVIRONMENTS:
            raise Conflict("TooManyEnvironments", "The emulator holds no more environments.")
        approval = self._govern(
            caller, "environments.write", request.stage, None, f"name:{request.name}", now
        )
        # Mutations from here on.
        self._consume(approval, now)
        environment_id = self._fresh_id("env-", self.environments)
        env = Environment(
            environment_id=environment_id,
            tenant_id=request.tenant_id,
            project_id=request.project_id,
            name=request.name,
            stage=request.stage,
            region=request.region,
            isolation_model=request.isolation_model,
            compute_targets=request.compute_targets,
            trace_id="trace-" + environment_id.removeprefix("env-"),
            created_at=now,
            status=EnvironmentStatus.PROVISIONING,
            updated_at=now,
        )
        env.history.append(StatusChange(env.status.value, now, None))
        self.environments[environment_id] = env
        self._emit(
            env,
            "EnvironmentProvisioningRequested",
            environment_id,
            now,
            {"environmentId": environment_id, "status": env.status.value, "stage": env.stage},
        )
        self._schedule_environment(env, now + self.seed.durations.environment_provisioning)
        return env

    # Deployments --------------------------------------------------------------------------

    def create_deployment(self, caller: Caller, body: Any, now: float) -> Deployment:
        scope = "runtime.deployments.write"
        _authorize(caller, scope)
        request = DeploymentRequest.from_json(body)
        decide(caller, scope, request.tenant_id).raise_if_refused()
        env = self._environment_for(caller, scope, request.environment_id)
        self._require_active(env)
        for component in request.components:
            if component.target not in env.compute_targets:
                raise InvalidArgument(
                    "InvalidRequest",
                    f"Target {component.target} is not a compute target of {env.environment_id}.",
                    {"field": "components"},
                )
            existing = env.services.get(component.module_id)
            if existing is not None and existing.target != component.target:
                raise InvalidArgument(
                    "InvalidRequest",
                    f"Service {component.module_id} runs on {existing.target}, not "
                    f"{component.target}.",
                    {"field": "components"},
                )
        if request.configuration_id is not None:
            self._configuration_in(env, request.configuration_id)
        busy = [
            d
            for d in self.deployments.values()
            if d.environment_id == env.environment_id and not d.finished
        ]
        if busy:
            raise Conflict(
                "DeploymentInProgress",
                f"Deployment {busy[0].deployment_id} is still in progress in {env.environment_id}.",
            )
        if len(self.deployments) >= MAX_DEPLOYMENTS:
            raise Conflict("TooManyDeployments", "The emulator holds no more deployments.")
        approval = self._govern(
            caller, "deployments.write", env.stage, env.environment_id, env.environment_id, now
        )
        self._consume(approval, now)
        deployment_id = self._fresh_id("dep-", self.deployments)
        deployment = Deployment(
            deployment_id=deployment_id,
            environment_id=env.environment_id,
            tenant_id=env.tenant_id,
            release_ref=request.release_ref,
            components=request.components,
            configuration_id=request.configuration_id,
            strategy=request.strategy,
            trace_id=env.trace_id,
            created_at=now,
            phase=DeploymentPhase.REQUESTED,
            updated_at=now,
        )
        deployment.history.append(StatusChange(deployment.phase.value, now, None))
        self.deployments[deployment_id] = deployment
        for component in request.components:
            service = env.services.get(component.module_id)
            deployment.previous[component.module_id] = None if service is None else service.running
            if service is not None:
                service.deploying = deployment_id
                self._refresh_drift(env, service, now)
        self._emit(
            env,
            "DeploymentRequested",
            deployment_id,
            now,
            {
                "deploymentId": deployment_id,
                "environmentId": env.environment_id,
                "releaseRef": deployment.release_ref,
                "phase": deployment.phase.value,
            },
        )
        self._schedule_deployment(deployment, now)
        return deployment

    def rollback_deployment(self, caller: Caller, deployment_id: str, now: float) -> Deployment:
        scope = "runtime.deployments.write"
        _authorize(caller, scope)
        deployment = self.deployments.get(deployment_id)
        if deployment is None:
            raise NotFound("DeploymentNotFound", f"Deployment {deployment_id} does not exist.")
        decide(caller, scope, deployment.tenant_id).raise_if_refused()
        if deployment.phase not in _ROLLBACK_FROM:
            raise Conflict(
                "RollbackNotPossible",
                f"Deployment {deployment_id} is {deployment.phase.value}; it cannot roll back.",
            )
        env = self.environments[deployment.environment_id]
        approval = self._govern(
            caller, "deployments.write", env.stage, env.environment_id, env.environment_id, now
        )
        self._consume(approval, now)
        self._step_deployment(deployment, DeploymentTrigger.ROLLBACK, now, "rollback requested")
        return deployment

    # Configurations and secret bindings ---------------------------------------------------

    def publish_configuration(self, caller: Caller, body: Any, now: float) -> Configuration:
        scope = "runtime.configurations.write"
        _authorize(caller, scope)
        request = ConfigurationRequest.from_json(body)
        decide(caller, scope, request.tenant_id).raise_if_refused()
        env = self._environment_for(caller, scope, request.environment_id)
        key = (env.environment_id, request.name)
        version = self._config_versions.get(key, 0) + 1
        configuration = Configuration(
            configuration_id=self._fresh_id("cfg-", self.configurations),
            environment_id=env.environment_id,
            tenant_id=env.tenant_id,
            name=request.name,
            version=version,
            settings=request.settings,
            published_at=now,
        )
        self._config_versions[key] = version
        self.configurations[configuration.configuration_id] = configuration
        self._emit(
            env,
            "ConfigurationPublished",
            configuration.configuration_id,
            now,
            {
                "configurationId": configuration.configuration_id,
                "name": configuration.name,
                "version": version,
            },
        )
        return configuration

    def bind_secrets(self, caller: Caller, body: Any, now: float) -> SecretBinding:
        scope = "runtime.secrets.write"
        _authorize(caller, scope)
        request = SecretBindingRequest.from_json(body)
        decide(caller, scope, request.tenant_id).raise_if_refused()
        env = self._environment_for(caller, scope, request.environment_id)
        self._service_in(env, request.service_id)
        approval = self._govern(
            caller, "secrets.write", env.stage, env.environment_id, env.environment_id, now
        )
        self._consume(approval, now)
        binding = SecretBinding(
            binding_id=self._fresh_id("sb-", self.bindings),
            environment_id=env.environment_id,
            tenant_id=env.tenant_id,
            service_id=request.service_id,
            secrets=request.secrets,
            created_at=now,
        )
        self.bindings[binding.binding_id] = binding
        self._emit(
            env,
            "SecretBindingCreated",
            binding.binding_id,
            now,
            {
                "bindingId": binding.binding_id,
                "serviceId": binding.service_id,
                # Names only: a binding never holds a value to leak.
                "secretNames": [s.name for s in binding.secrets],
            },
            module_id=binding.service_id,
        )
        return binding

    def request_rotation(
        self, caller: Caller, binding_id: str, body: Any, now: float
    ) -> tuple[SecretBinding, tuple[Rotation, ...]]:
        scope = "runtime.secrets.write"
        _authorize(caller, scope)
        request = RotationRequest.from_json(body)
        binding = self.bindings.get(binding_id)
        if binding is None:
            raise NotFound("SecretBindingNotFound", f"Secret binding {binding_id} does not exist.")
        decide(caller, scope, binding.tenant_id).raise_if_refused()
        names = [s.name for s in binding.secrets]
        if request.secret_name is not None and request.secret_name not in names:
            raise NotFound(
                "SecretNotBound", f"Secret {request.secret_name} is not part of {binding_id}."
            )
        env = self.environments[binding.environment_id]
        approval = self._govern(
            caller, "secrets.write", env.stage, env.environment_id, env.environment_id, now
        )
        self._consume(approval, now)
        chosen = names if request.secret_name is None else [request.secret_name]
        rotations = tuple(Rotation(self.ids.new("rot-"), name, now) for name in chosen)
        binding.rotations.extend(rotations)
        self._emit(
            env,
            "SecretRotationRequested",
            binding.binding_id,
            now,
            {"bindingId": binding.binding_id, "secretNames": chosen},
            module_id=binding.service_id,
        )
        return binding, rotations

    # Scaling ------------------------------------------------------------------------------

    def apply_scaling(
        self, caller: Caller, body: Any, now: float
    ) -> tuple[Environment, ScalingPolicy]:
        scope = "runtime.scaling.write"
        _authorize(caller, scope)
        request = ScalingRequest.from_json(body)
        decide(caller, scope, request.tenant_id).raise_if_refused()
        env = self._environment_for(caller, scope, request.environment_id)
        self._require_active(env)
        service = self._service_in(env, request.service_id)
        if service.target != request.target:
            raise InvalidArgument(
                "InvalidScalingPolicy",
                f"Service {service.service_id} runs on {service.target}, not {request.target}.",
                {"field": "target"},
            )
        approval = self._govern(
            caller, "scaling.write", env.stage, env.environment_id, env.environment_id, now
        )
        self._consume(approval, now)
        policy = ScalingPolicy(
            scaling_policy_id=self.ids.new("scl-"),
            target=request.target,
            metric=request.metric,
            min_replicas=request.min_replicas,
            max_replicas=request.max_replicas,
            target_utilization_percent=request.target_utilization_percent,
            scale_to_zero=request.scale_to_zero,
            applied_at=now,
        )
        service.scaling = policy
        # The inventory reflects the policy: replica counts move into the allowed range.
        service.deployed = _clamp(service.deployed, policy)
        service.running = _clamp(service.running, policy)
        self._emit(
            env,
            "ScalingPolicyApplied",
            policy.scaling_policy_id,
            now,
            {
                "scalingPolicyId": policy.scaling_policy_id,
                "serviceId": service.service_id,
                "minReplicas": policy.min_replicas,
                "maxReplicas": policy.max_replicas,
            },
            module_id=service.service_id,
        )
        self._refresh_drift(env, service, now)
        return env, policy

    # Timers -------------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the next timed step is due (None: nothing is waiting)."""
        while self._timers:
            due, _, kind, key = self._timers[0]
            if self._timer_current(due, kind, key):
                return due
            heapq.heappop(self._timers)
        return None

    def advance(self, now: float) -> int:
        """Take every step due at or before `now`, each at its own due time. Returns the count."""
        steps = 0
        while self._timers and self._timers[0][0] <= now:
            due, _, kind, key = heapq.heappop(self._timers)
            if not self._timer_current(due, kind, key):
                continue
            steps += 1
            if kind == "env":
                self._finish_provisioning(self.environments[key], due)
            else:
                self._deployment_elapsed(self.deployments[key], due)
        return steps

    def _timer_current(self, due: float, kind: str, key: str) -> bool:
        record: Environment | Deployment | None = (
            self.environments.get(key) if kind == "env" else self.deployments.get(key)
        )
        return record is not None and record.due_at == due

    def _push_timer(self, due: float, kind: str, key: str) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (due, self._timer_seq, kind, key))

    def _schedule_environment(self, env: Environment, due: float) -> None:
        env.due_at = due
        self._push_timer(due, "env", env.environment_id)

    def _schedule_deployment(self, deployment: Deployment, now: float) -> None:
        if deployment.finished:
            return
        deployment.due_at = now + _phase_duration(self.seed, deployment.phase)
        self._push_timer(deployment.due_at, "dep", deployment.deployment_id)

    def _finish_provisioning(self, env: Environment, at: float) -> None:
        if self.faults.fail_next_provisioning > 0:
            self.faults.fail_next_provisioning -= 1
            env.apply(EnvironmentTrigger.PROVISIONING_FAILED, at, "injected provisioning failure")
            event = "EnvironmentProvisioningFailed"
        else:
            env.apply(EnvironmentTrigger.PROVISIONED, at)
            event = "EnvironmentActivated"
        self._emit(
            env,
            event,
            env.environment_id,
            at,
            {"environmentId": env.environment_id, "status": env.status.value},
        )

    def _deployment_elapsed(self, deployment: Deployment, at: float) -> None:
        if deployment.phase is DeploymentPhase.HEALTH_GATING:
            reason = self._gate_failure(deployment)
            if reason is None:
                self._step_deployment(deployment, DeploymentTrigger.GATE_PASSED, at, None)
            else:
                self._step_deployment(deployment, DeploymentTrigger.GATE_FAILED, at, reason)
        else:
            self._step_deployment(deployment, DeploymentTrigger.ELAPSED, at, None)

    def _gate_failure(self, deployment: Deployment) -> str | None:
        """Why the health gate fails now, or None when it passes (consumes an armed fault)."""
        if self.faults.fail_next_health_gate > 0:
            self.faults.fail_next_health_gate -= 1
            return "injected health gate failure"
        env = self.environments[deployment.environment_id]
        for component in deployment.components:
            service = env.services.get(component.module_id)
            if service is not None and service.health_status == "Unhealthy":
                return f"service {service.service_id} is Unhealthy"
        return None

    def _step_deployment(
        self, deployment: Deployment, trigger: DeploymentTrigger, at: float, reason: str | None
    ) -> None:
        before = deployment.phase
        deployment.apply(trigger, at, reason)
        env = self.environments[deployment.environment_id]
        phase = deployment.phase
        if phase is DeploymentPhase.ROLLING_OUT:
            for component in deployment.components:
                self._roll_out(env, deployment, component, at)
        elif phase is DeploymentPhase.COMPLETED:
            for component in deployment.components:
                service = env.services[component.module_id]
                service.deployed = service.running
                service.deploying = None
                self._refresh_drift(env, service, at)
        elif phase is DeploymentPhase.ROLLED_BACK:
            self._restore(env, deployment, at)
        payload: dict[str, Any] = {
            "deploymentId": deployment.deployment_id,
            "environmentId": env.environment_id,
            "from": before.value,
            "phase": phase.value,
        }
        if reason is not None:
            payload["reason"] = reason
        event = {
            DeploymentPhase.COMPLETED: "DeploymentCompleted",
            DeploymentPhase.ROLLED_BACK: "DeploymentRolledBack",
        }.get(phase, "DeploymentPhaseChanged")
        self._emit(env, event, deployment.deployment_id, at, payload)
        self._schedule_deployment(deployment, at)

    def _roll_out(
        self, env: Environment, deployment: Deployment, component: Component, at: float
    ) -> None:
        service = env.services.get(component.module_id)
        replicas = 1 if service is None or service.running is None else service.running.replicas
        workload = Workload(component.image, replicas, deployment.configuration_id)
        if service is None:
            service = self._add_service(
                env, component.module_id, component.target, workload, (), at
            )
            # New to the environment: nothing was deployed before this rollout.
            service.deployed = None
        if service.scaling is not None:
            workload = Workload(
                workload.image,
                min(max(replicas, service.scaling.min_replicas), service.scaling.max_replicas),
                workload.configuration_id,
            )
        service.deploying = deployment.deployment_id
        service.running = workload
        self._evaluate_health(env, service, at)

    def _restore(self, env: Environment, deployment: Deployment, at: float) -> None:
        for component in deployment.components:
            service = env.services.get(component.module_id)
            if service is None:
                continue
            service.deploying = None
            previous = deployment.previous.get(component.module_id)
            if previous is None and service.deployed is None:
                # The rollout brought this service; rolling back takes it away again.
                self._remove_service(env, service)
                continue
            service.running = previous if previous is not None else service.deployed
            self._evaluate_health(env, service, at)
            self._refresh_drift(env, service, at)

    # Faults and the governance gate (control routes) ---------------------------------------

    def arm_provisioning_failure(self, count: int = 1) -> int:
        if count < 0:
            raise InvalidArgument("InvalidRequest", "count must not be negative.")
        self.faults.fail_next_provisioning = count
        return count

    def arm_health_gate_failure(self, count: int = 1) -> int:
        if count < 0:
            raise InvalidArgument("InvalidRequest", "count must not be negative.")
        self.faults.fail_next_health_gate = count
        return count

    def set_unhealthy(
        self,
        environment_id: str,
        service_id: str,
        check: str | None,
        unhealthy: bool,
        now: float,
    ) -> RuntimeService:
        """Report a service (or one of its checks, default `self`) Unhealthy, or heal it."""
        env = self._environment(environment_id)
        service = self._service_in(env, service_id)
        name = check or "self"
        forced = service.forced_unhealthy
        service.forced_unhealthy = forced | {name} if unhealthy else forced - {name}
        self._evaluate_health(env, service, now)
        return service

    def inject_drift(
        self,
        environment_id: str,
        service_id: str,
        kind: str,
        actual: str,
        severity: str | None,
        now: float,
    ) -> RuntimeService:
        return self._inject_drift(environment_id, service_id, kind, actual, severity, now)

    def apply_drift_rule(self, rule_id: str, now: float) -> RuntimeService:
        rule = self._drift_rule(rule_id)
        return self._inject_drift(
            rule.environment_id, rule.service_id, rule.kind, rule.actual, rule.severity, now
        )

    def clear_drift(self, environment_id: str, service_id: str, now: float) -> RuntimeService:
        env = self._environment(environment_id)
        service = self._service_in(env, service_id)
        if service.deploying is None:
            service.running = service.deployed
            self._refresh_drift(env, service, now)
        return service

    def grant_approval(self, approval_id: str, now: float) -> Approval:
        return self._decide_approval(approval_id, ApprovalTrigger.GRANT, now)

    def reject_approval(self, approval_id: str, now: float) -> Approval:
        return self._decide_approval(approval_id, ApprovalTrigger.REJECT, now)

    def _decide_approval(self, approval_id: str, trigger: ApprovalTrigger, now: float) -> Approval:
        approval = self.approvals.get(approval_id)
        if approval is None:
            raise NotFound("ApprovalNotFound", f"Approval {approval_id} does not exist.")
        if not APPROVAL_MACHINE.allows(approval.status, trigger):
            raise Conflict(
                "ApprovalAlreadyDecided",
                f"Approval {approval_id} is {approval.status.value}; it cannot be decided again.",
            )
        approval.apply(trigger, now)
        env = self.environments.get(approval.environment_id or "")
        self._emit_for_tenant(
            approval.tenant_id,
            None if env is None else env.project_id,
            None if env is None else env.trace_id,
            f"GovernanceApproval{approval.status.value}",
            approval.approval_id,
            now,
            {"approvalId": approval.approval_id, "operation": approval.operation},
        )
        return approval

    def _drift_rule(self, rule_id: str) -> DriftRuleSeed:
        for rule in self.seed.drift_rules:
            if rule.rule_id == rule_id:
                return rule
        raise NotFound("DriftRuleNotFound", f"Drift rule {rule_id} is not in the seed.")

    def _inject_drift(
        self,
        environment_id: str,
        service_id: str,
        kind: str,
        actual: str,
        severity: str | None,
        now: float,
    ) -> RuntimeService:
        env = self._environment(environment_id)
        service = self._service_in(env, service_id)
        running = service.running
        if running is None or service.deploying is not None:
            raise Conflict(
                "ServiceNotSettled",
                f"Service {service_id} is not settled (deploying or not running); "
                "drift is judged on settled services only.",
            )
        if kind == "ImageVersionMismatch":
            if not actual or ":" in actual or "/" in actual:
                raise InvalidArgument("InvalidRequest", "actual must be an image tag, like 1.4.1.")
            drifted = attrs.evolve(running, image=with_tag(running.image, actual))
        elif kind == "ReplicaCountMismatch":
            if not actual.isdigit():
                raise InvalidArgument("InvalidRequest", "actual must be a replica count.")
            drifted = attrs.evolve(running, replicas=int(actual))
        elif kind == "ConfigurationMismatch":
            if not actual:
                raise InvalidArgument("InvalidRequest", "actual must be a configuration id.")
            drifted = attrs.evolve(running, configuration_id=actual)
        else:
            raise InvalidArgument(
                "InvalidRequest", f"kind must be one of {', '.join(DEFAULT_SEVERITY)}."
            )
        service.running = drifted
        service.drift_severity[kind] = severity or DEFAULT_SEVERITY[kind]
        self._refresh_drift(env, service, now)
        return service

    def _govern(
        self,
        caller: Caller,
        operation: str,
        stage: str,
        environment_id: str | None,
        target: str,
        now: float,
    ) -> Approval | None:
        """The governance decision; a granted approval to consume, or None for "allow"."""
        for rule in self.seed.governance:
            if rule.operation not in ("*", operation) or rule.stage != stage:
                continue
            if rule.environment_id is not None and rule.environment_id != environment_id:
                continue
            if rule.decision == "allow":
                return None
            details = {"operation": f"runtime.{operation}", "environmentId": environment_id}
            if rule.decision == "deny":
                raise GovernanceDenied("GovernanceDenied", rule.reason, details)
            return self._approval_for(caller, operation, environment_id, target, now, details)
        return None

    def _approval_for(
        self,
        caller: Caller,
        operation: str,
        environment_id: str | None,
        target: str,
        now: float,
        details: dict[str, Any],
    ) -> Approval:
        key = (caller.tenant_id, operation, target)
        existing = self.approvals.get(self._open_approvals.get(key, ""))
        if existing is not None and existing.status is ApprovalStatus.GRANTED:
            return existing
        if existing is not None and existing.status is ApprovalStatus.REJECTED:
            # Told once; the next attempt asks for a new approval.
            del self._open_approvals[key]
            raise GovernanceDenied(
                "GovernanceDenied",
                f"Approval {existing.approval_id} was rejected.",
                {**details, "approvalId": existing.approval_id},
            )
        if existing is None:
            if len(self.approvals) >= MAX_APPROVALS:
                raise Conflict("TooManyApprovals", "The emulator holds no more approvals.")
            existing = Approval(
                approval_id=self._fresh_id("apr-", self.approvals),
                tenant_id=caller.tenant_id,
                operation=f"runtime.{operation}",
                environment_id=environment_id,
                target=target,
                requested_at=now,
            )
            self.approvals[existing.approval_id] = existing
            self._open_approvals[key] = existing.approval_id
            env = self.environments.get(environment_id or "")
            self._emit_for_tenant(
                caller.tenant_id,
                None if env is None else env.project_id,
                None if env is None else env.trace_id,
                "GovernanceApprovalRequested",
                existing.approval_id,
                now,
                {"approvalId": existing.approval_id, "operation": existing.operation},
            )
        raise ApprovalRequired(
            "ApprovalRequired",
            f"This change needs a governance approval ({existing.approval_id}).",
            {**details, "approvalId": existing.approval_id},
        )

    def _consume(self, approval: Approval | None, now: float) -> None:
        if approval is None:
            return
        approval.apply(ApprovalTrigger.CONSUME, now)
        for key, approval_id in list(self._open_approvals.items()):
            if approval_id == approval.approval_id:
                del self._open_approvals[key]

    # Health and drift ---------------------------------------------------------------------

    def _add_service(
        self,
        env: Environment,
        service_id: str,
        target: str,
        workload: Workload | None,
        checks: tuple[Check, ...],
        now: float,
    ) -> RuntimeService:
        service = RuntimeService(
            service_id=service_id,
            environment_id=env.environment_id,
            target=target,
            deployed=workload,
            running=workload,
            checks=checks or (Check("self", "Healthy"),),
            health_status="Unhealthy",
            evaluated_at=now,
        )
        env.services[service_id] = service
        self._service_index.setdefault(service_id, set()).add(env.environment_id)
        service.health_status = service.computed_health()
        return service

    def _remove_service(self, env: Environment, service: RuntimeService) -> None:
        del env.services[service.service_id]
        holders = self._service_index.get(service.service_id, set())
        holders.discard(env.environment_id)
        if not holders:
            self._service_index.pop(service.service_id, None)

    def _evaluate_health(self, env: Environment, service: RuntimeService, now: float) -> None:
        status = service.computed_health()
        service.evaluated_at = now
        if status == service.health_status:
            return
        before, service.health_status = service.health_status, status
        self._emit(
            env,
            "ServiceHealthChanged",
            f"{env.environment_id}/{service.service_id}",
            now,
            {
                "serviceId": service.service_id,
                "environmentId": env.environment_id,
                "from": before,
                "status": status,
            },
            module_id=service.service_id,
        )

    def _refresh_drift(self, env: Environment, service: RuntimeService, now: float) -> None:
        """Recompute a service's findings: deployed vs running, unless a rollout is underway."""
        wanted: dict[str, tuple[str, str]] = {}
        deployed, running = service.deployed, service.running
        if service.deploying is None and deployed is not None and running is not None:
            if deployed.image != running.image:
                wanted["ImageVersionMismatch"] = (
                    image_tag(deployed.image),
                    image_tag(running.image),
                )
            if deployed.replicas != running.replicas:
                wanted["ReplicaCountMismatch"] = (str(deployed.replicas), str(running.replicas))
            if deployed.configuration_id != running.configuration_id:
                wanted["ConfigurationMismatch"] = (
                    deployed.configuration_id or "",
                    running.configuration_id or "",
                )
        for kind in list(service.findings):
            finding = service.findings[kind]
            if wanted.get(kind) != (finding.desired, finding.actual):
                del service.findings[kind]
                self._drift_event(env, service, "DriftResolved", finding, now)
        for kind, (desired, actual) in wanted.items():
            if kind in service.findings:
                continue
            finding = Finding(
                finding_id=self.ids.new("drift-"),
                kind=kind,
                desired=desired,
                actual=actual,
                severity=service.drift_severity.get(kind, DEFAULT_SEVERITY[kind]),
                detected_at=now,
            )
            service.findings[kind] = finding
            self._drift_event(env, service, "DriftDetected", finding, now)

    def _drift_event(
        self, env: Environment, service: RuntimeService, event: str, finding: Finding, now: float
    ) -> None:
        self._emit(
            env,
            event,
            finding.finding_id,
            now,
            {
                "findingId": finding.finding_id,
                "serviceId": service.service_id,
                "kind": finding.kind,
                "desired": finding.desired,
                "actual": finding.actual,
                "severity": finding.severity,
            },
            module_id=service.service_id,
        )

    # Helpers ------------------------------------------------------------------------------

    def _environment(self, environment_id: str) -> Environment:
        env = self.environments.get(environment_id)
        if env is None:
            raise NotFound("EnvironmentNotFound", f"Environment {environment_id} does not exist.")
        return env

    def _environment_for(self, caller: Caller, scope: str, environment_id: str) -> Environment:
        env = self._environment(environment_id)
        decide(caller, scope, env.tenant_id).raise_if_refused()
        return env

    def _service_in(self, env: Environment, service_id: str) -> RuntimeService:
        service = env.services.get(service_id)
        if service is None:
            raise NotFound(
                "ServiceNotFound",
                f"Service {service_id} is not in environment {env.environment_id}.",
            )
        return service

    def _configuration_in(self, env: Environment, configuration_id: str) -> Configuration:
        configuration = self.configurations.get(configuration_id)
        if configuration is None or configuration.environment_id != env.environment_id:
            raise InvalidArgument(
                "UnknownConfiguration",
                f"Configuration {configuration_id} is not published for {env.environment_id}.",
                {"field": "configurationId"},
            )
        return configuration

    def _require_active(self, env: Environment) -> None:
        if env.status is not EnvironmentStatus.ACTIVE:
            raise Conflict(
                "EnvironmentNotActive",
                f"Environment {env.environment_id} is {env.status.value}, not Active.",
            )

    def _check_tenant_binding(self, tenant_id: str, project_id: str) -> None:
        """The tenant's RuntimeTenantBinding must cover the project (403 otherwise)."""
        if not self.seed.tenants:
            return
        for tenant in self.seed.tenants:
            if tenant.tenant_id == tenant_id:
                if tenant.projects and project_id not in tenant.projects:
                    raise Forbidden(
                        "ProjectNotBound",
                        f"Project {project_id} is not bound to tenant {tenant_id}.",
                        {"field": "projectId"},
                    )
                return
        raise Forbidden("TenantNotBound", f"Tenant {tenant_id} has no runtime tenant binding.")

    def _fresh_id(self, prefix: str, taken: Mapping[str, object]) -> str:
        for _ in range(100):
            candidate = self.ids.new(prefix)
            if candidate not in taken:
                return candidate
        raise Conflict("IdSpaceExhausted", f"No fresh {prefix} id could be made.")

    def _emit(
        self,
        env: Environment,
        event_type: str,
        correlation_id: str,
        at: float,
        payload: dict[str, Any],
        *,
        module_id: str | None = None,
    ) -> None:
        self._emit_for_tenant(
            env.tenant_id,
            env.project_id,
            env.trace_id,
            event_type,
            correlation_id,
            at,
            payload,
            module_id=module_id,
        )

    def _emit_for_tenant(
        self,
        tenant_id: str,
        project_id: str | None,
        trace_id: str | None,
        event_type: str,
        correlation_id: str,
        at: float,
        payload: dict[str, Any],
        *,
        module_id: str | None = None,
    ) -> None:
        self.events.append(
            event_id=self.ids.new("evt-"),
            event_type=event_type,
            tenant_id=tenant_id,
            project_id=project_id,
            module_id=module_id,
            trace_id=trace_id,
            correlation_id=correlation_id,
            occurred_at=at,
            payload=payload,
        )


_ROLLBACK_FROM = frozenset(
    {
        DeploymentPhase.REQUESTED,
        DeploymentPhase.PROVISIONING,
        DeploymentPhase.CONFIGURING,
        DeploymentPhase.ROLLING_OUT,
        DeploymentPhase.HEALTH_GATING,
    }
)


def _authorize(caller: Caller, scope: str) -> None:
    """The scope check, before anything about the request is looked at."""
    decide(caller, scope, None).raise_if_refused()


def _phase_duration(seed: ConnectSoftSeed, phase: DeploymentPhase) -> float:
    d = seed.durations
    return {
        DeploymentPhase.REQUESTED: d.deployment_requested,
        DeploymentPhase.PROVISIONING: d.deployment_provisioning,
        DeploymentPhase.CONFIGURING: d.deployment_configuring,
        DeploymentPhase.ROLLING_OUT: d.deployment_rolling_out,
        DeploymentPhase.HEALTH_GATING: d.deployment_health_gating,
        DeploymentPhase.PROMOTING: d.deployment_promoting,
        DeploymentPhase.ROLLING_BACK: d.deployment_rolling_back,
    }.get(phase, 0.0)


def _clamp(workload: Workload | None, policy: ScalingPolicy) -> Workload | None:
    if workload is None:
        return None
    replicas = min(max(workload.replicas, policy.min_replicas), policy.max_replicas)
    return attrs.evolve(workload, replicas=replicas)
