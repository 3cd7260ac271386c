"""The `connectsoft:` seed block: OIDC clients, tenant bindings, governance rules, durations,
seeded environments with their services and health checks, drift rules and faults.

Owns the ConnectSoft seed schema, its defaults and cross-checks (duplicate ids, unknown tenants,
rules naming unknown environments or services). Every problem is one SeedError with the YAML
path. Imports no YAML and nothing from trio, quart or hypercorn: the core builds its state from
these frozen values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

from ..platform.seedschema import Node, check_unique

SCOPES = (
    "runtime.environments.write",
    "runtime.environments.read",
    "runtime.deployments.write",
    "runtime.deployments.read",
    "runtime.configurations.write",
    "runtime.secrets.write",
    "runtime.health.read",
    "runtime.scaling.write",
    "runtime.drift.read",
)
STAGES = ("dev", "test", "staging", "prod")
ISOLATION_MODELS = ("silo", "pool", "bridge")
COMPUTE_TARGETS = ("aks", "container-apps", "functions", "app-service")
HEALTH_STATUSES = ("Healthy", "Degraded", "Unhealthy")
# The operations the governance gate decides on (the source: "mutating environment, deployment,
# scaling, and secret operations ... for production environments").
GOVERNED_OPERATIONS = ("environments.write", "deployments.write", "scaling.write", "secrets.write")
DECISIONS = ("allow", "deny", "require_approval")
DRIFT_KINDS = ("ImageVersionMismatch", "ReplicaCountMismatch", "ConfigurationMismatch")
SEVERITIES = ("Low", "Medium", "High", "Critical")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Environment ids carry the source's prefix so seeded and created ones look alike.
ENVIRONMENT_ID_PATTERN = re.compile(r"^env-[A-Za-z0-9-]{1,60}$")


def _ident(node: Node, pattern: re.Pattern[str] = ID_PATTERN) -> str:
    text = node.as_str()
    if not pattern.fullmatch(text):
        raise node.error(f"{text!r} is not a valid id (letters, digits, '.', '_', '-')")
    return text


def _choices(nodes: Iterable[Node], choices: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(item.as_choice(choices) for item in nodes)


@attrs.frozen
class ClientSeed:
    """An OIDC client allowed the client-credentials grant."""

    client_id: str
    client_secret: str = attrs.field(repr=False)
    scopes: tuple[str, ...]
    # The tenants a token of this client may carry; the first is the default.
    tenants: tuple[str, ...]

    @classmethod
    def from_node(cls, node: Node) -> ClientSeed:
        f = node.fields(required=("client_id", "client_secret", "tenants"), optional=("scopes",))
        tenants = tuple(_ident(item) for item in f.list("tenants"))
        if not tenants:
            raise f["tenants"].error("a client needs at least one tenant")
        scopes_node = f.get("scopes")
        return cls(
            client_id=_ident(f["client_id"]),
            client_secret=f.str("client_secret"),
            scopes=SCOPES if scopes_node is None else _choices(scopes_node.as_list(), SCOPES),
            tenants=tenants,
        )


@attrs.frozen
class TenantSeed:
    """A tenant binding: which projects the tenant may provision environments for."""

    tenant_id: str
    # Empty: any project.
    projects: tuple[str, ...]

    @classmethod
    def from_node(cls, node: Node) -> TenantSeed:
        f = node.fields(required=("tenant_id",), optional=("projects",))
        return cls(
            tenant_id=_ident(f["tenant_id"]),
            projects=tuple(_ident(item) for item in f.list("projects")),
        )


@attrs.frozen
class GovernanceRuleSeed:
    """One policy rule; the first rule matching an operation on an environment decides."""

    operation: str  # one of GOVERNED_OPERATIONS or "*"
    stage: str
    decision: str
    reason: str
    # None: any environment of that stage.
    environment_id: str | None

    @classmethod
    def from_node(cls, node: Node) -> GovernanceRuleSeed:
        f = node.fields(
            required=("decision",), optional=("operation", "stage", "reason", "environment_id")
        )
        operation = f.get("operation")
        stage = f.get("stage")
        decision = f["decision"].as_choice(DECISIONS)
        reason = f.opt_str("reason")
        if decision == "deny" and reason is None:
            raise node.error("a deny rule needs a reason")
        env = f.get("environment_id")
        return cls(
            operation="*"
            if operation is None
            else operation.as_choice(("*", *GOVERNED_OPERATIONS)),
            stage="prod" if stage is None else stage.as_choice(STAGES),
            decision=decision,
            reason=reason or "",
            environment_id=None if env is None else _ident(env, ENVIRONMENT_ID_PATTERN),
        )


@attrs.frozen
class DurationsSeed:
    """Seconds each timed state lasts; zero moves on at the next clock step."""

    environment_provisioning: float = 5.0
    deployment_requested: float = 0.0
    deployment_provisioning: float = 2.0
    deployment_configuring: float = 1.0
    deployment_rolling_out: float = 3.0
    deployment_health_gating: float = 2.0
    deployment_promoting: float = 1.0
    deployment_rolling_back: float = 2.0

    @classmethod
    def from_node(cls, node: Node | None) -> DurationsSeed:
        if node is None:
            return cls()
        names = [field.name for field in attrs.fields(cls)]
        f = node.fields(optional=names)
        defaults = cls()
        values = {name: f.float(name, getattr(defaults, name), minimum=0.0) for name in names}
        return cls(**values)


@attrs.frozen
class CheckSeed:
    name: str
    status: str
    duration_ms: int | None

    @classmethod
    def from_node(cls, node: Node) -> CheckSeed:
        f = node.fields(required=("name",), optional=("status", "duration_ms"))
        duration = f.get("duration_ms")
        status = f.get("status")
        return cls(
            name=_ident(f["name"]),
            status="Healthy" if status is None else status.as_choice(HEALTH_STATUSES),
            duration_ms=None if duration is None else duration.as_int(minimum=0),
        )


@attrs.frozen
class ServiceSeed:
    service_id: str
    image: str
    target: str
    replicas: int
    configuration_id: str | None
    checks: tuple[CheckSeed, ...]

    @classmethod
    def from_node(cls, node: Node) -> ServiceSeed:
        f = node.fields(
            required=("service_id", "image"),
            optional=("target", "replicas", "configuration_id", "checks"),
        )
        image = f.str("image")
        if ":" not in image.rsplit("/", 1)[-1]:
            raise f["image"].error("an image needs a tag (registry/name:tag)")
        checks = tuple(CheckSeed.from_node(item) for item in f.list("checks"))
        check_unique(
            ((item, check.name) for item, check in zip(f.list("checks"), checks, strict=True)),
            "check",
        )
        target = f.get("target")
        return cls(
            service_id=_ident(f["service_id"]),
            image=image,
            target="aks" if target is None else target.as_choice(COMPUTE_TARGETS),
            replicas=f.int("replicas", 1, minimum=0),
            configuration_id=f.opt_str("configuration_id"),
            checks=checks,
        )


@attrs.frozen
class EnvironmentSeed:
    """An environment that exists from the start (Active unless `status: Failed`)."""

    environment_id: str
    tenant_id: str
    project_id: str
    name: str
    stage: str
    region: str
    isolation_model: str
    compute_targets: tuple[str, ...]
    status: str
    services: tuple[ServiceSeed, ...]

    @classmethod
    def from_node(cls, node: Node) -> EnvironmentSeed:
        f = node.fields(
            required=("environment_id", "tenant_id", "project_id", "name"),
            optional=(
                "stage",
                "region",
                "isolation_model",
                "compute_targets",
                "status",
                "services",
            ),
        )
        services = tuple(ServiceSeed.from_node(item) for item in f.list("services"))
        check_unique(
            (
                (item, service.service_id)
                for item, service in zip(f.list("services"), services, strict=True)
            ),
            "service_id",
        )
        targets_node = f.get("compute_targets")
        targets = (
            COMPUTE_TARGETS
            if targets_node is None
            else _choices(targets_node.as_list(), COMPUTE_TARGETS)
        )
        for item, service in zip(f.list("services"), services, strict=True):
            if service.target not in targets:
                raise item.error(
                    f"target {service.target!r} is not a compute target of the environment"
                )
        stage = f.get("stage")
        isolation = f.get("isolation_model")
        status = f.get("status")
        return cls(
            environment_id=_ident(f["environment_id"], ENVIRONMENT_ID_PATTERN),
            tenant_id=_ident(f["tenant_id"]),
            project_id=_ident(f["project_id"]),
            name=_ident(f["name"]),
            stage="dev" if stage is None else stage.as_choice(STAGES),
            region=f.str("region", "westeurope"),
            isolation_model="pool" if isolation is None else isolation.as_choice(ISOLATION_MODELS),
            compute_targets=targets,
            status="Active" if status is None else status.as_choice(("Active", "Failed")),
            services=services,
        )


@attrs.frozen
class DriftRuleSeed:
    """A named drift: make what is running differ from what was deployed.

    `active: true` applies it at start; otherwise a control route applies it by `rule_id`.
    """

    rule_id: str
    environment_id: str
    service_id: str
    kind: str
    actual: str
    severity: str | None
    active: bool

    @classmethod
    def from_node(cls, node: Node) -> DriftRuleSeed:
        f = node.fields(
            required=("rule_id", "environment_id", "service_id", "kind", "actual"),
            optional=("severity", "active"),
        )
        kind = f["kind"].as_choice(DRIFT_KINDS)
        actual_node = f["actual"]
        actual = (
            str(actual_node.value) if isinstance(actual_node.value, int) else actual_node.as_str()
        )
        if kind == "ReplicaCountMismatch" and not actual.isdigit():
            raise actual_node.error("a replica count must be a whole number")
        severity = f.get("severity")
        return cls(
            rule_id=_ident(f["rule_id"]),
            environment_id=_ident(f["environment_id"], ENVIRONMENT_ID_PATTERN),
            service_id=_ident(f["service_id"]),
            kind=kind,
            actual=actual,
            severity=None if severity is None else severity.as_choice(SEVERITIES),
            active=f.bool("active", False),
        )


@attrs.frozen
class FaultsSeed:
    """Faults armed at start, the same ones the control routes arm."""

    fail_next_provisioning: int = 0
    fail_next_health_gate: int = 0
    # (environment_id, service_id) pairs reported Unhealthy from the start.
    unhealthy_services: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_node(cls, node: Node | None) -> FaultsSeed:
        if node is None:
            return cls()
        f = node.fields(
            optional=("fail_next_provisioning", "fail_next_health_gate", "unhealthy_services")
        )
        unhealthy = []
        for item in f.list("unhealthy_services"):
            g = item.fields(required=("environment_id", "service_id"))
            unhealthy.append(
                (_ident(g["environment_id"], ENVIRONMENT_ID_PATTERN), _ident(g["service_id"]))
            )
        return cls(
            fail_next_provisioning=f.int("fail_next_provisioning", 0, minimum=0),
            fail_next_health_gate=f.int("fail_next_health_gate", 0, minimum=0),
            unhealthy_services=tuple(unhealthy),
        )


@attrs.frozen
class ConnectSoftSeed:
    clients: tuple[ClientSeed, ...] = ()
    tenants: tuple[TenantSeed, ...] = ()
    governance: tuple[GovernanceRuleSeed, ...] = ()
    durations: DurationsSeed = DurationsSeed()
    environments: tuple[EnvironmentSeed, ...] = ()
    drift_rules: tuple[DriftRuleSeed, ...] = ()
    faults: FaultsSeed = FaultsSeed()
    token_lifetime: int = 3600
    # How many events the append-only log keeps (oldest dropped first).
    event_retention: int = 10_000
    # Updates buffered per open health stream before the oldest is dropped.
    stream_buffer: int = 8

    @classmethod
    def from_node(cls, node: Node | None) -> ConnectSoftSeed:
        if node is None:
            return cls()
        f = node.fields(
            optional=(
                "clients",
                "tenants",
                "governance",
                "durations",
                "environments",
                "drift_rules",
                "faults",
                "token_lifetime",
                "event_retention",
                "stream_buffer",
            )
        )
        clients = tuple(ClientSeed.from_node(item) for item in f.list("clients"))
        check_unique(
            ((item, c.client_id) for item, c in zip(f.list("clients"), clients, strict=True)),
            "client_id",
        )
        tenants = tuple(TenantSeed.from_node(item) for item in f.list("tenants"))
        check_unique(
            ((item, t.tenant_id) for item, t in zip(f.list("tenants"), tenants, strict=True)),
            "tenant_id",
        )
        known_tenants = {t.tenant_id for t in tenants}
        environments = tuple(EnvironmentSeed.from_node(item) for item in f.list("environments"))
        env_nodes = f.list("environments")
        check_unique(
            ((item, e.environment_id) for item, e in zip(env_nodes, environments, strict=True)),
            "environment_id",
        )
        check_unique(
            ((item, e.name) for item, e in zip(env_nodes, environments, strict=True)),
            "environment name",
        )
        if known_tenants:
            for item, client in zip(f.list("clients"), clients, strict=True):
                for tenant in client.tenants:
                    if tenant not in known_tenants:
                        raise item.error(f"tenant {tenant!r} has no tenant binding under tenants")
            for item, env in zip(env_nodes, environments, strict=True):
                if env.tenant_id not in known_tenants:
                    raise item.error(
                        f"tenant {env.tenant_id!r} has no tenant binding under tenants"
                    )
        services = {
            (env.environment_id, service.service_id)
            for env in environments
            for service in env.services
        }
        rules = tuple(DriftRuleSeed.from_node(item) for item in f.list("drift_rules"))
        rule_nodes = f.list("drift_rules")
        check_unique(
            ((item, r.rule_id) for item, r in zip(rule_nodes, rules, strict=True)), "rule_id"
        )
        for item, rule in zip(rule_nodes, rules, strict=True):
            if (rule.environment_id, rule.service_id) not in services:
                raise item.error(
                    f"service {rule.service_id!r} is not seeded in environment "
                    f"{rule.environment_id!r}"
                )
        governance = tuple(GovernanceRuleSeed.from_node(item) for item in f.list("governance"))
        env_ids = {env.environment_id for env in environments}
        for item, policy in zip(f.list("governance"), governance, strict=True):
            if policy.environment_id is not None and policy.environment_id not in env_ids:
                raise item.error(f"environment {policy.environment_id!r} is not seeded")
        faults = FaultsSeed.from_node(f.get("faults"))
        for index, pair in enumerate(faults.unhealthy_services):
            if pair not in services:
                raise Node(
                    None, f"{node.path}.faults.unhealthy_services[{index}]", node.source
                ).error(f"service {pair[1]!r} is not seeded in environment {pair[0]!r}")
        return cls(
            clients=clients,
            tenants=tenants,
            governance=governance,
            durations=DurationsSeed.from_node(f.get("durations")),
            environments=environments,
            drift_rules=rules,
            faults=faults,
            token_lifetime=f.int("token_lifetime", 3600, minimum=1),
            event_retention=f.int("event_retention", 10_000, minimum=1),
            stream_buffer=f.int("stream_buffer", 8, minimum=1),
        )
