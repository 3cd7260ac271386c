"""The control plane: every Fabric operation, authorized, applied, audited and announced.

Owns `ControlPlane`, the one object the API and the engine call. Each public method takes the
`Caller`, checks visibility (a resource in an org the caller cannot see, or outside an API
key's org, is NotFound), the role the action needs (Forbidden), validates the request, and only
then mutates, appends events to the log and writes the audit entry. The engine drives
execution through the `run_*`/`node_*` hooks, which go through the run, node and job state
machines. Scope checks per route live in the API's route table; `check_permission` applies
scopes too. Time comes from the injected clock, ids and randomness from injected factories.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import calendar
import datetime
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from .apikeys import ApiKey, KeyRing, parse_scopes
from .assets import Asset, AssetStore, AssetUpload
from .auth import AuthMethod, Caller, authenticate
from .config import PlaneConfig
from .errors import Conflict, Forbidden, NotFound, ValidationFailed
from .events import DomainEvent, EventDraft, EventLog
from .jobs import Idempotency, Job, JobEvent, JobPage, JobStatus, apply_job, page_jobs
from .ledger import AuditEntry, AuditLog, UsageLedger, UsageRecord, UsageSummary
from .providers import CallPlan, Catalog, ProviderRequest
from .tenancy import (
    DEFAULT_ORG_ID,
    Action,
    Invitation,
    Membership,
    Organization,
    Role,
    Team,
    Tenancy,
    action_from_name,
    actions_of,
)
from .workflows import (
    NodeDefinition,
    NodeEvent,
    NodeStatus,
    RunEvent,
    RunStatus,
    WorkflowDefinition,
    WorkflowRun,
    apply_node,
    apply_run,
    bind_outputs,
    parse_nodes,
)

JOB_NODE_KEY = "generate"
MAX_BATCH_CHECKS = 100
RESOURCE_TYPES = (
    "organization",
    "team",
    "job",
    "workflow_run",
    "workflow_definition",
    "api_key",
    "asset",
)


class Clock(Protocol):
    def now(self) -> float: ...


def month_start(now: float) -> float:
    moment = time.gmtime(now)
    return float(calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0, 0, 0, 0)))


def _opt_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed(f"{name} must be a non-empty string")
    return value


def _str_field(body: Mapping[str, Any], name: str) -> str:
    value = _opt_str(body, name)
    if value is None:
        raise ValidationFailed(f"{name} is required")
    return value


def _obj_field(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationFailed(f"{name} must be an object")
    return value


@attrs.define
class ControlPlane:
    clock: Clock
    new_id: Callable[[], str]
    random_text: Callable[[int, str], str]
    random: Callable[[], float]
    catalog: Catalog = attrs.field(factory=Catalog)
    config: PlaneConfig = attrs.field(factory=PlaneConfig)
    tenancy: Tenancy = attrs.field(init=False)
    keys: KeyRing = attrs.field(init=False)
    events: EventLog = attrs.field(init=False)
    usage: UsageLedger = attrs.field(init=False)
    audit: AuditLog = attrs.field(init=False)
    assets: AssetStore = attrs.field(init=False)
    idempotency: Idempotency = attrs.field(factory=Idempotency)
    definitions: dict[str, WorkflowDefinition] = attrs.field(factory=dict)
    runs: dict[str, WorkflowRun] = attrs.field(factory=dict)
    jobs: dict[str, Job] = attrs.field(factory=dict)
    # Set by the engine: every appended event is handed here (fan-out to subscribers).
    on_event: Callable[[DomainEvent], None] | None = None

    def __attrs_post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Back to a fresh plane (only the default org), keeping the clock, ids and config."""
        self.idempotency = Idempotency()
        self.definitions = {}
        self.runs = {}
        self.jobs = {}
        self.tenancy = Tenancy(self.new_id)
        self.keys = KeyRing(self.new_id, self.random_text)
        self.events = EventLog(self.new_id, self.config.event_retention)
        self.usage = UsageLedger(self.config.usage_retention)
        self.audit = AuditLog(self.config.audit_retention)
        self.assets = AssetStore(self.config.max_asset_bytes, self.config.max_total_asset_bytes)
        now = self.clock.now()
        self.tenancy.add_organization("default", "Default Organization", now, org_id=DEFAULT_ORG_ID)

    # Plumbing ------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def emit(self, draft: EventDraft) -> DomainEvent:
        event = self.events.append(draft, self.now())
        if self.on_event is not None:
            self.on_event(event)
        return event

    def record_audit(
        self,
        caller: Caller,
        organization_id: str | None,
        action: str,
        resource_type: str,
        resource_id: str,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.audit.add(
            AuditEntry(
                id=self.new_id(),
                organization_id=organization_id,
                principal_id=caller.principal_id,
                api_key_id=None if caller.api_key is None else caller.api_key.id,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id,
                metadata=metadata or {},
                request_id=caller.request_id,
                created_at=self.now(),
            )
        )

    def authenticate(
        self, authorization: str | None, principal_header: str | None, *, public: bool
    ) -> Caller | None:
        caller = authenticate(
            authorization=authorization,
            principal_header=principal_header,
            public=public,
            production=self.config.production,
            keys=self.keys,
            jwt_secret=self.config.jwt_secret,
            now=self.now(),
        )
        # A bare client works: dev principals own the default org on first sight.
        if (
            caller is not None
            and caller.method is AuthMethod.DEV_HEADER
            and self.tenancy.role_in(caller.principal_id, DEFAULT_ORG_ID) is None
        ):
            self.tenancy.grant(caller.principal_id, DEFAULT_ORG_ID, Role.OWNER, self.now())
        return caller

    def org_for(self, caller: Caller, organization_id: str, action: Action) -> Organization:
        """The org if the caller may do `action` there: 404 if invisible, 403 if the role is low."""
        key_org = caller.key_org
        if key_org is not None and organization_id != key_org:
            raise NotFound(f"organization {organization_id} not found")
        self.tenancy.require(caller.principal_id, organization_id, action)
        return self.tenancy.organizations[organization_id]

    def visible_orgs(self, caller: Caller, minimum: Role = Role.VIEWER) -> list[str]:
        found = [
            org.id
            for org, role in self.tenancy.orgs_of(caller.principal_id)
            if role.at_least(minimum)
        ]
        key_org = caller.key_org
        return [org for org in found if key_org is None or org == key_org]

    def _default_org(self, caller: Caller, body: Mapping[str, Any]) -> str:
        """The org a request acts in: the key's org, else the body's, else the default org."""
        if caller.key_org is not None:
            return caller.key_org
        named = _opt_str(body, "organization_id")
        return named or DEFAULT_ORG_ID

    # Identity ------------------------------------------------------------------------------

    def my_orgs(self, caller: Caller) -> list[tuple[Organization, Role]]:
        key_org = caller.key_org
        return [
            (org, role)
            for org, role in self.tenancy.orgs_of(caller.principal_id)
            if key_org is None or org.id == key_org
        ]

    def my_teams(self, caller: Caller) -> list[tuple[Team, Role]]:
        key_org = caller.key_org
        return [
            (team, role)
            for team, role in self.tenancy.teams_of(caller.principal_id)
            if key_org is None or team.organization_id == key_org
        ]

    def my_permissions(self, caller: Caller) -> list[tuple[str, str | None, Role, list[str]]]:
        rows: list[tuple[str, str | None, Role, list[str]]] = [
            (org.id, None, role, actions_of(role)) for org, role in self.my_orgs(caller)
        ]
        rows += [
            (team.organization_id, team.id, role, actions_of(role))
            for team, role in self.my_teams(caller)
        ]
        return rows

    # Organizations, teams, invitations -----------------------------------------------------

    def create_organization(self, caller: Caller, body: Mapping[str, Any]) -> Organization:
        if not caller.full_access or caller.api_key is not None:
            raise Forbidden("Insufficient permissions: API keys cannot create organizations")
        slug = _str_field(body, "slug")
        name = _str_field(body, "name")
        org = self.tenancy.create_organization(caller.principal_id, slug, name, self.now())
        self.emit(
            EventDraft(
                "organization.created", organization_id=org.id, payload={"slug": slug, "name": name}
            )
        )
        self.record_audit(caller, org.id, "organization.create", "organization", org.id)
        return org

    def get_organization(self, caller: Caller, org_id: str) -> Organization:
        return self.org_for(caller, org_id, Action.READ)

    def org_teams(self, caller: Caller, org_id: str) -> list[Team]:
        self.org_for(caller, org_id, Action.READ)
        return self.tenancy.org_teams(org_id)

    def org_members(self, caller: Caller, org_id: str) -> list[Membership]:
        self.org_for(caller, org_id, Action.READ)
        return self.tenancy.org_members(org_id)

    def create_team(self, caller: Caller, body: Mapping[str, Any]) -> Team:
        org_id = _str_field(body, "organization_id")
        slug = _str_field(body, "slug")
        name = _str_field(body, "name")
        self.org_for(caller, org_id, Action.ADMIN)
        team = self.tenancy.create_team(caller.principal_id, org_id, slug, name, self.now())
        self.emit(EventDraft("team.created", organization_id=org_id, payload={"team_id": team.id}))
        self.record_audit(caller, org_id, "team.create", "team", team.id, {"slug": slug})
        return team

    def get_team(self, caller: Caller, team_id: str) -> Team:
        team = self.tenancy.team(caller.principal_id, team_id)
        self.org_for(caller, team.organization_id, Action.READ)
        return team

    def create_invitation(self, caller: Caller, body: Mapping[str, Any]) -> Invitation:
        org_id = _str_field(body, "organization_id")
        email = _str_field(body, "email")
        role = Role.parse(body.get("role"))
        team_id = _opt_str(body, "team_id")
        self.org_for(caller, org_id, Action.ADMIN)
        invitation = self.tenancy.create_invitation(
            caller.principal_id, org_id, email, role, team_id, self.now()
        )
        self.record_audit(
            caller, org_id, "invitation.create", "invitation", invitation.id, {"role": role.value}
        )
        return invitation

    def accept_invitation(self, caller: Caller, invitation_id: str) -> Invitation:
        if caller.api_key is not None:
            raise Forbidden("Insufficient permissions: API keys cannot accept invitations")
        invitation = self.tenancy.accept_invitation(caller.principal_id, invitation_id, self.now())
        self.record_audit(
            caller, invitation.organization_id, "invitation.accept", "invitation", invitation.id
        )
        return invitation

    def revoke_invitation(self, caller: Caller, invitation_id: str) -> Invitation:
        invitation = self.tenancy.invitation(invitation_id)
        self.org_for(caller, invitation.organization_id, Action.ADMIN)
        invitation = self.tenancy.revoke_invitation(caller.principal_id, invitation_id, self.now())
        self.record_audit(
            caller, invitation.organization_id, "invitation.revoke", "invitation", invitation.id
        )
        return invitation

    # Authorization checks ------------------------------------------------------------------

    def _resource_org(self, resource_type: str, resource_id: str) -> str | None:
        if resource_type == "organization":
            return resource_id if resource_id in self.tenancy.organizations else None
        tables: dict[str, Mapping[str, Any]] = {
            "team": self.tenancy.teams,
            "job": self.jobs,
            "workflow_run": self.runs,
            "workflow_definition": self.definitions,
            "api_key": self.keys.by_id,
            "asset": self.assets.assets,
        }
        found = tables.get(resource_type, {}).get(resource_id)
        return None if found is None else str(found.organization_id)

    def check_permission(
        self, caller: Caller, check: Any
    ) -> tuple[bool, str | None, str, str | None]:
        """(allowed, reason, action, resource) for one check body; bad shapes raise 400."""
        if not isinstance(check, dict):
            raise ValidationFailed("each check must be an object")
        action_name = check.get("action")
        if not isinstance(action_name, str) or not action_name:
            raise ValidationFailed("action is required")
        resource = check.get("resource")
        if resource is None and check.get("resource_type") is not None:
            resource = f"{check.get('resource_type')}:{check.get('resource_id')}"
        if resource is not None and not isinstance(resource, str):
            raise ValidationFailed("resource must be a string '<type>:<id>'")
        action = action_from_name(action_name)
        if action is None:
            return False, "unknown action", action_name, resource
        if resource is None:
            if caller.key_org is None:
                return False, "no resource", action_name, resource
            org_id: str | None = caller.key_org
        else:
            kind, _, rid = resource.partition(":")
            if kind not in RESOURCE_TYPES or not rid:
                raise ValidationFailed(
                    f"resource must be '<type>:<id>' with type one of {', '.join(RESOURCE_TYPES)}"
                )
            org_id = self._resource_org(kind, rid)
        if org_id is None or (caller.key_org is not None and org_id != caller.key_org):
            return False, "not found", action_name, resource
        role = self.tenancy.role_in(caller.principal_id, org_id)
        if role is None:
            return False, "not found", action_name, resource
        key = caller.api_key
        if (
            key is not None
            and not key.full_access
            and ":" in action_name
            and action_name not in key.scopes
        ):
            return False, f"API key lacks scope {action_name}", action_name, resource
        if not role.at_least(action.minimum):
            return (
                False,
                f"role {role.value} is below {action.minimum.value}",
                action_name,
                resource,
            )
        return True, None, action_name, resource

    def check_batch(
        self, caller: Caller, body: Mapping[str, Any]
    ) -> list[tuple[bool, str | None, str, str | None]]:
        checks = body.get("checks")
        if not isinstance(checks, list):
            raise ValidationFailed("checks must be an array")
        if len(checks) > MAX_BATCH_CHECKS:
            raise ValidationFailed(f"at most {MAX_BATCH_CHECKS} checks")
        # Validate every check before answering any (a bad one fails the batch).
        return [self.check_permission(caller, check) for check in checks]

    # API keys ------------------------------------------------------------------------------

    def create_api_key(self, caller: Caller, body: Mapping[str, Any]) -> tuple[ApiKey, str]:
        name = _str_field(body, "name")
        org_id = _str_field(body, "organization_id")
        scopes = parse_scopes(body.get("scopes"))
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            raise ValidationFailed("description must be a string")
        team_id = _opt_str(body, "team_id")
        expires = body.get("expires_at")
        expires_at = None if expires is None else parse_timestamp(expires, "expires_at")
        self.org_for(caller, org_id, Action.ADMIN)
        if team_id is not None:
            team = self.tenancy.teams.get(team_id)
            if team is None or team.organization_id != org_id:
                raise ValidationFailed(f"team {team_id} is not in organization {org_id}")
        key, raw = self.keys.create(
            name=name,
            organization_id=org_id,
            principal_id=caller.principal_id,
            scopes=scopes,
            now=self.now(),
            description=description,
            team_id=team_id,
            expires_at=expires_at,
        )
        self.record_audit(
            caller, org_id, "api_key.create", "api_key", key.id, {"prefix": key.prefix}
        )
        return key, raw

    def list_api_keys(self, caller: Caller) -> list[ApiKey]:
        orgs = set(self.visible_orgs(caller, Role.ADMIN))
        return [key for key in self.keys.by_id.values() if key.organization_id in orgs]

    def _key(self, caller: Caller, key_id: str) -> ApiKey:
        key = self.keys.get(key_id)
        self.org_for(caller, key.organization_id, Action.ADMIN)
        return key

    def get_api_key(self, caller: Caller, key_id: str) -> ApiKey:
        return self._key(caller, key_id)

    def disable_api_key(self, caller: Caller, key_id: str) -> ApiKey:
        key = self.keys.disable(self._key(caller, key_id))
        self.record_audit(caller, key.organization_id, "api_key.disable", "api_key", key.id)
        return key

    def revoke_api_key(self, caller: Caller, key_id: str) -> ApiKey:
        key = self.keys.revoke(self._key(caller, key_id))
        self.record_audit(caller, key.organization_id, "api_key.revoke", "api_key", key.id)
        return key

    # Jobs ----------------------------------------------------------------------------------

    def submit_job(
        self, caller: Caller, body: Mapping[str, Any], header_key: str | None = None
    ) -> tuple[Job, bool]:
        """The job and whether this was an idempotent replay (True: nothing new happened)."""
        request = ProviderRequest.from_fields(
            body.get("modality"),
            body.get("input"),
            body.get("model"),
            body.get("tier"),
            body.get("params"),
        )
        if not isinstance(request.input, dict):
            raise ValidationFailed("input must be an object")
        org_id = _opt_str(body, "organization_id") or DEFAULT_ORG_ID
        key = _opt_str(body, "idempotency_key") or header_key
        self.org_for(caller, org_id, Action.WRITE)
        if key is not None:
            original = self.idempotency.lookup(org_id, "jobs", key, body)
            if original is not None:
                return self.jobs[original], True
        estimate = self.catalog.plan(request, lambda: 0.0)
        now = self.now()
        job_id = self.new_id()
        node = NodeDefinition(
            key=JOB_NODE_KEY,
            operation="ai.generate",
            runtime="provider",
            config={"modality": request.modality},
            inputs=(),
            outputs=(),
            depends_on=(),
            raw={},
        )
        run = WorkflowRun.create(
            self.new_id(),
            org_id,
            None,
            None,
            (node,),
            {},
            caller.principal_id,
            now,
            job_id=job_id,
            api_key_id=None if caller.api_key is None else caller.api_key.id,
        )
        job = Job(
            id=job_id,
            organization_id=org_id,
            workflow_run_id=run.id,
            modality=request.modality,
            input=request.input,
            params=dict(request.params),
            tier=request.tier,
            model=request.model,
            idempotency_key=key,
            estimated_cost_usd=estimate.cost_usd,
            created_by=caller.principal_id,
            created_at=now,
            updated_at=now,
        )
        self.runs[run.id] = run
        self.jobs[job.id] = job
        if key is not None:
            self.idempotency.remember(org_id, "jobs", key, body, job.id)
        self._forget_old_runs()
        self.emit(EventDraft("job.created", organization_id=org_id, job_id=job.id, run_id=run.id))
        self.emit(
            EventDraft("workflow.run.created", organization_id=org_id, run_id=run.id, job_id=job.id)
        )
        self.record_audit(caller, org_id, "job.create", "job", job.id, {"modality": job.modality})
        return job, False

    def get_job(self, caller: Caller, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        try:
            self.org_for(caller, job.organization_id, Action.READ)
        except (NotFound, Forbidden):
            raise NotFound(f"job {job_id} not found") from None
        return job

    def list_jobs(
        self, caller: Caller, limit: int, cursor: str | None, org_filter: str | None
    ) -> JobPage:
        orgs = set(self.visible_orgs(caller))
        if org_filter is not None:
            orgs &= {org_filter}
        return page_jobs(
            (j for j in self.jobs.values() if j.organization_id in orgs), limit, cursor
        )

    def job_usage(self, caller: Caller, job_id: str) -> tuple[Job, list[UsageRecord]]:
        job = self.get_job(caller, job_id)
        return job, self.usage.for_job(job.id)

    # Workflow definitions and runs ---------------------------------------------------------

    def upsert_definition(
        self, caller: Caller, body: Mapping[str, Any]
    ) -> tuple[WorkflowDefinition, bool]:
        """The definition and whether it was created (False: an existing name was updated)."""
        name = _str_field(body, "name")
        org_id = _opt_str(body, "organization_id") or DEFAULT_ORG_ID
        nodes, defaults = parse_nodes(body.get("nodes"), body.get("defaults"))
        self.org_for(caller, org_id, Action.WRITE)
        now = self.now()
        existing = next(
            (
                d
                for d in self.definitions.values()
                if d.organization_id == org_id and d.name == name
            ),
            None,
        )
        if existing is not None:
            existing.nodes = nodes
            existing.defaults = defaults
            existing.version += 1
            existing.updated_at = now
            definition, created = existing, False
        else:
            definition = WorkflowDefinition(
                self.new_id(), org_id, name, nodes, defaults, caller.principal_id, now, now
            )
            self.definitions[definition.id] = definition
            created = True
        self.record_audit(
            caller,
            org_id,
            "workflow_definition.upsert",
            "workflow_definition",
            definition.id,
            {"version": definition.version},
        )
        return definition, created

    def list_definitions(self, caller: Caller, org_filter: str | None) -> list[WorkflowDefinition]:
        orgs = set(self.visible_orgs(caller))
        if org_filter is not None:
            orgs &= {org_filter}
        return [d for d in self.definitions.values() if d.organization_id in orgs]

    def get_definition(self, caller: Caller, definition_id: str) -> WorkflowDefinition:
        definition = self.definitions.get(definition_id)
        if definition is None or definition.organization_id not in self.visible_orgs(caller):
            raise NotFound(f"workflow definition {definition_id} not found")
        return definition

    def create_run(
        self, caller: Caller, body: Mapping[str, Any], header_key: str | None = None
    ) -> tuple[WorkflowRun, bool]:
        definition_id = _str_field(body, "workflow_definition_id")
        context = _obj_field(body, "context") or {}
        metadata = _obj_field(body, "metadata")
        environment = _opt_str(body, "environment")
        priority = body.get("priority")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise ValidationFailed("priority must be an integer")
        key = _opt_str(body, "idempotency_key") or header_key
        definition = self.get_definition(caller, definition_id)
        self.org_for(caller, definition.organization_id, Action.WRITE)
        if key is not None:
            original = self.idempotency.lookup(definition.organization_id, "runs", key, body)
            if original is not None:
                return self.runs[original], True
        run = WorkflowRun.create(
            self.new_id(),
            definition.organization_id,
            definition.id,
            definition.name,
            definition.nodes,
            context,
            caller.principal_id,
            self.now(),
            metadata=metadata,
            environment=environment,
            priority=priority,
            api_key_id=None if caller.api_key is None else caller.api_key.id,
        )
        self.runs[run.id] = run
        if key is not None:
            self.idempotency.remember(definition.organization_id, "runs", key, body, run.id)
        self._forget_old_runs()
        self.emit(self._run_draft(run, "workflow.run.created"))
        self.record_audit(
            caller, run.organization_id, "workflow_run.create", "workflow_run", run.id
        )
        return run, False

    def _forget_old_runs(self) -> None:
        """Keep at most `run_retention` runs: drop the oldest finished ones (a bounded scan, so
        long-running old runs cost little and stay)."""
        excess = len(self.runs) - self.config.run_retention
        if excess <= 0:
            return
        for run_id in list(itertools.islice(self.runs, excess + 64)):
            run = self.runs[run_id]
            if not run.status.terminal:
                continue
            del self.runs[run_id]
            self.idempotency.forget(run_id)
            if run.job_id is not None:
                self.jobs.pop(run.job_id, None)
                self.idempotency.forget(run.job_id)
            excess -= 1
            if excess <= 0:
                break

    def get_run(self, caller: Caller, run_id: str) -> WorkflowRun:
        run = self.runs.get(run_id)
        if run is None or run.organization_id not in self.visible_orgs(caller):
            raise NotFound(f"workflow run {run_id} not found")
        return run

    def start_run(self, caller: Caller, run_id: str) -> WorkflowRun:
        run = self.get_run(caller, run_id)
        self.org_for(caller, run.organization_id, Action.WRITE)
        if run.job_id is not None:
            raise Conflict("this run backs a job and is started by the executor")
        self.run_start(run)
        self.record_audit(caller, run.organization_id, "workflow_run.start", "workflow_run", run.id)
        return run

    def cancel_run(self, caller: Caller, run_id: str) -> tuple[WorkflowRun, bool]:
        """The run and whether it changed (an already cancelled run answers unchanged)."""
        run = self.get_run(caller, run_id)
        self.org_for(caller, run.organization_id, Action.WRITE)
        if run.status is RunStatus.CANCELLED:
            return run, False
        self.run_cancel(run)
        self.record_audit(
            caller, run.organization_id, "workflow_run.cancel", "workflow_run", run.id
        )
        return run, True

    # Execution hooks (called by the engine) ------------------------------------------------

    def _run_draft(
        self, run: WorkflowRun, name: str, node_key: str | None = None, **payload: Any
    ) -> EventDraft:
        return EventDraft(
            name,
            organization_id=run.organization_id,
            job_id=run.job_id,
            workflow_id=run.workflow_definition_id,
            run_id=run.id,
            node_key=node_key,
            payload=payload,
        )

    def _job_draft(self, job: Job, name: str, **payload: Any) -> EventDraft:
        return EventDraft(
            name,
            organization_id=job.organization_id,
            job_id=job.id,
            run_id=job.workflow_run_id,
            payload=payload,
        )

    def run_start(self, run: WorkflowRun) -> None:
        apply_run(run, RunEvent.START, self.now())
        self.emit(self._run_draft(run, "workflow.run.started"))

    def node_request(self, run: WorkflowRun, key: str) -> ProviderRequest:
        """What the provider is asked for a node: the job's own request, or the node's config
        with its inputs resolved from the run's context."""
        if run.job_id is not None:
            job = self.jobs[run.job_id]
            return ProviderRequest(job.modality, job.input, job.model, job.tier, job.params)
        node = run.nodes[key].definition
        config = node.config
        return ProviderRequest(
            node.modality,
            node.resolve_inputs(run.context),
            config.get("model"),
            config.get("tier"),
            dict(config.get("params") or {}),
        )

    def node_ready(self, run: WorkflowRun, key: str) -> None:
        apply_node(run.nodes[key], NodeEvent.READY, self.now())
        self.emit(self._run_draft(run, "workflow.node.ready", key))

    def node_start(self, run: WorkflowRun, key: str) -> None:
        apply_node(run.nodes[key], NodeEvent.START, self.now())
        self.emit(self._run_draft(run, "workflow.node.started", key))
        if run.job_id is not None:
            job = self.jobs[run.job_id]
            if job.status is JobStatus.PENDING:
                apply_job(job, JobEvent.START, self.now())
                self.emit(self._job_draft(job, "job.started"))

    def node_attempt(self, run: WorkflowRun, key: str) -> int:
        node = run.nodes[key]
        node.attempts += 1
        return node.attempts

    def node_complete(self, run: WorkflowRun, key: str, plan: CallPlan) -> None:
        node = run.nodes[key]
        apply_node(node, NodeEvent.COMPLETE, self.now())
        node.output = plan.output
        bind_outputs(node.definition, plan.output, run.context)
        self.record_usage(
            plan,
            organization_id=run.organization_id,
            principal_id=run.created_by,
            api_key_id=run.api_key_id,
            job_id=run.job_id,
            run_id=run.id,
            node_key=key,
        )
        self.emit(self._run_draft(run, "workflow.node.completed", key, output=plan.output))

    def node_fail(self, run: WorkflowRun, key: str, error: str) -> None:
        """Fail the node and skip everything downstream of it."""
        node = run.nodes[key]
        apply_node(node, NodeEvent.FAIL, self.now())
        node.error = error
        self.emit(self._run_draft(run, "workflow.node.failed", key, error=error))
        for dependent in run.dependents_of(key):
            if not run.nodes[dependent].status.done:
                self._skip(run, dependent)

    def node_skip(self, run: WorkflowRun, key: str) -> None:
        """Skip a node that will not run (the executor gave up on its run)."""
        self._skip(run, key)

    def _skip(self, run: WorkflowRun, key: str) -> None:
        apply_node(run.nodes[key], NodeEvent.SKIP, self.now())
        self.emit(self._run_draft(run, "workflow.node.skipped", key))

    def run_finish(self, run: WorkflowRun) -> None:
        """Complete the run, or fail it naming the first failed node; settles a backing job."""
        failed = next(((k, n) for k, n in run.nodes.items() if n.status is NodeStatus.FAILED), None)
        job = self.jobs.get(run.job_id) if run.job_id is not None else None
        if failed is None:
            apply_run(run, RunEvent.COMPLETE, self.now())
            run.output = run.context if job is None else run.nodes[JOB_NODE_KEY].output
            self.emit(self._run_draft(run, "workflow.run.completed", output=run.output))
            if job is not None:
                records = self.usage.for_job(job.id)
                last = records[-1] if records else None
                apply_job(job, JobEvent.COMPLETE, self.now())
                job.output = run.output
                if last is not None:
                    job.provider_id = last.provider_id
                    job.model = last.model
                    job.usage = {
                        "input_tokens": last.input_tokens,
                        "output_tokens": last.output_tokens,
                        "estimated_cost_usd": last.estimated_cost_usd,
                    }
                self.emit(
                    self._job_draft(job, "job.completed", output=job.output, usage=job.usage or {})
                )
        else:
            key, node = failed
            apply_run(run, RunEvent.FAIL, self.now())
            run.error = f"node {key} failed: {node.error}"
            self.emit(self._run_draft(run, "workflow.run.failed", error=run.error))
            if job is not None:
                apply_job(job, JobEvent.FAIL, self.now())
                job.error = node.error
                self.emit(self._job_draft(job, "job.failed", error=job.error))

    def run_cancel(self, run: WorkflowRun) -> None:
        """Cancel: unfinished nodes are skipped (running ones too; the engine stops their work)."""
        apply_run(run, RunEvent.CANCEL, self.now())
        for key, node in run.nodes.items():
            if not node.status.done:
                self._skip(run, key)
        self.emit(self._run_draft(run, "workflow.run.cancelled", reason=None))
        job = self.jobs.get(run.job_id) if run.job_id is not None else None
        if job is not None and not job.status.terminal:
            # Jobs have no cancelled status; a cancelled backing run fails its job.
            apply_job(job, JobEvent.FAIL, self.now())
            job.error = "cancelled"
            self.emit(self._job_draft(job, "job.failed", error=job.error))

    def announce_interrupted_run(
        self, run: WorkflowRun, failed: Iterable[str], skipped: Iterable[str]
    ) -> None:
        """The events of a run a restore has ended as failed (persistence.py set the statuses:
        nothing executes it again): the same names as a failure here, so its stream closes."""
        for key in failed:
            self.emit(self._run_draft(run, "workflow.node.failed", key, error=run.nodes[key].error))
        for key in skipped:
            self.emit(self._run_draft(run, "workflow.node.skipped", key))
        self.emit(self._run_draft(run, "workflow.run.failed", error=run.error))

    def announce_interrupted_job(self, job: Job) -> None:
        """`job.failed` for a job a restore has ended as failed, so its stream closes."""
        self.emit(self._job_draft(job, "job.failed", error=job.error))

    # Providers -----------------------------------------------------------------------------

    def plan_provider_call(
        self, caller: Caller, body: Mapping[str, Any], *, estimate: bool = False
    ) -> tuple[CallPlan, str]:
        request = ProviderRequest.from_fields(
            body.get("modality"),
            body.get("input"),
            body.get("model"),
            body.get("tier"),
            body.get("params"),
        )
        org_id = self._default_org(caller, body)
        self.org_for(caller, org_id, Action.EXECUTE)
        plan = self.catalog.plan(request, (lambda: 0.0) if estimate else self.random)
        return plan, org_id

    def record_usage(
        self,
        plan: CallPlan,
        *,
        organization_id: str,
        principal_id: str,
        api_key_id: str | None,
        job_id: str | None = None,
        run_id: str | None = None,
        node_key: str | None = None,
    ) -> UsageRecord:
        record = UsageRecord(
            id=self.new_id(),
            organization_id=organization_id,
            principal_id=principal_id,
            api_key_id=api_key_id,
            job_id=job_id,
            workflow_run_id=run_id,
            node_key=node_key,
            provider_id=plan.provider_id,
            model=plan.model,
            modality=plan.modality,
            input_tokens=plan.input_tokens,
            output_tokens=plan.output_tokens,
            estimated_cost_usd=plan.cost_usd,
            created_at=self.now(),
        )
        self.usage.add(record)
        return record

    # Assets --------------------------------------------------------------------------------

    def begin_upload(
        self, caller: Caller, org_id: str, filename: str | None, content_type: str
    ) -> AssetUpload:
        if filename is None or not filename.strip():
            raise ValidationFailed("filename is required")
        self.org_for(caller, org_id, Action.WRITE)
        return self.assets.begin(org_id, filename, content_type, caller.principal_id)

    def finish_upload(self, caller: Caller, upload: AssetUpload) -> Asset:
        asset = upload.finish(self.new_id(), self.now())
        self.record_audit(
            caller,
            asset.organization_id,
            "asset.upload",
            "asset",
            asset.id,
            {"size_bytes": asset.size_bytes, "content_type": asset.content_type},
        )
        return asset

    def get_asset(self, caller: Caller, asset_id: str) -> Asset:
        asset = self.assets.get(asset_id)
        try:
            self.org_for(caller, asset.organization_id, Action.WRITE)
        except NotFound:
            raise NotFound(f"asset {asset_id} not found") from None
        return asset

    # Usage and audit -----------------------------------------------------------------------

    def org_usage(
        self, caller: Caller, org_id: str, start: float | None, end: float | None
    ) -> UsageSummary:
        self.org_for(caller, org_id, Action.WRITE)
        now = self.now()
        start = month_start(now) if start is None else start
        end = now if end is None else end
        runs = sum(
            1
            for r in self.runs.values()
            if r.organization_id == org_id and start <= r.created_at <= end
        )
        jobs = sum(
            1
            for j in self.jobs.values()
            if j.organization_id == org_id and start <= j.created_at <= end
        )
        return self.usage.summary(org_id, start, end, runs, jobs)

    def org_usage_records(self, caller: Caller, org_id: str) -> list[UsageRecord]:
        self.org_for(caller, org_id, Action.WRITE)
        return [r for r in reversed(self.usage.records) if r.organization_id == org_id]

    def org_audit(self, caller: Caller, org_id: str) -> list[AuditEntry]:
        self.org_for(caller, org_id, Action.ADMIN)
        return self.audit.newest_first([org_id])

    def global_audit(self, caller: Caller) -> list[AuditEntry]:
        return self.audit.newest_first(self.visible_orgs(caller, Role.ADMIN))


def parse_timestamp(value: object, name: str) -> float:
    """RFC 3339 UTC (`...Z` or `+00:00`) to epoch seconds."""
    if not isinstance(value, str):
        raise ValidationFailed(f"{name} must be an RFC 3339 timestamp")
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(f"{name} must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise ValidationFailed(f"{name} must carry a time zone")
    return moment.timestamp()
