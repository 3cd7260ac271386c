"""Fabric's durable state for `--state-file`: who exists, how they authenticate, the workflow
definitions they wrote, the jobs and runs whose ids they hold, what happened to them, what it
cost, who did what, and the assets they uploaded.

Owns `snapshot` (organizations, teams, memberships, invitations, API keys as hashes, workflow
definitions, jobs, workflow runs with their nodes, the idempotency keys of both, the retained
events with their sequences, usage records, audit entries, and the metadata of assets whose
bytes are in the asset directory, as JSON-ready data) and `restore` (reads all of it first,
asset bytes included, raising ValueError naming the first bad entry and changing nothing, then
lays it over the seeded state by id; the saved event, usage and audit logs replace the seeded
plane's, bounded by the current retention).

A job or run that had not finished when the state was saved comes back failed ("the emulator
restarted before it finished"): no executor picks it up again. The restore announces that
with the events the engine would have emitted (`workflow.node.failed`/`skipped`,
`workflow.run.failed`, `job.failed`), numbered after the saved ones, so its streams close and a
`Last-Event-ID` from before the restart resumes right after that event.

Format: one `version` (1); every section after the first ones is optional, so a file written
before jobs, runs, events, usage, audit or assets were kept still loads (the plane then keeps
what it has). Secrets: API keys only as hashes; events, usage and audit entries hold ids, names,
numbers and the JSON callers sent, never a raw key, a JWT or the JWT secret. The platform writes
the file with mode 0600. Asset bytes are never in the JSON: `assetfiles.py` keeps them beside
the file. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterator
from typing import Any

import attrs

from ..platform.seedschema import Node, check_unique, plain_failure
from .assetfiles import FILE_NAME, AssetFiles
from .core.apikeys import ApiKey, KeyStatus
from .core.assets import Asset
from .core.errors import FabricError
from .core.events import DomainEvent, EventLog
from .core.jobs import Job, JobEvent, JobStatus, apply_job
from .core.ledger import AuditEntry, AuditLog, UsageLedger, UsageRecord
from .core.plane import ControlPlane
from .core.tenancy import Invitation, InvitationStatus, Membership, Organization, Role, Team
from .core.workflows import (
    NodeDefinition,
    NodeEvent,
    NodeRun,
    NodeStatus,
    RunEvent,
    RunStatus,
    WorkflowDefinition,
    WorkflowRun,
    apply_node,
    apply_run,
    parse_nodes,
)

VERSION = 1
# What a job, run or node that was still going when the state was saved says after a restart.
RESTARTED = "the emulator restarted before it finished"


def _membership(m: Membership) -> dict[str, Any]:
    return {
        "id": m.id,
        "principal_id": m.principal_id,
        "organization_id": m.organization_id,
        "role": m.role.value,
        "created_at": m.created_at,
        "team_id": m.team_id,
        "active": m.active,
    }


def snapshot(plane: ControlPlane, stored: Container[str] = frozenset()) -> dict[str, Any]:
    """The state as JSON-ready data; assets are listed only if their bytes are `stored` (in
    the asset directory, assetfiles.py), never with their bytes."""
    return capture(plane, stored)()


def capture(
    plane: ControlPlane, stored: Container[str] = frozenset(), *, lazy: bool = False
) -> Callable[[], dict[str, Any]]:
    """`snapshot` in two halves. Now (on the event loop): the small sections, the jobs and
    runs that have not finished, and the contents of the logs. The returned function (called
    in a worker thread while the service goes on serving) renders the rest: finished jobs and
    runs no longer change, and log entries never do. With a hundred thousand retained jobs
    the loop's part is a walk over references, not the seconds the whole rendering takes.
    `lazy`: the long sections are generators, each record rendered as the state file's writer
    takes it (statefile.canonical_pieces), so no rendered copy of the state piles up."""
    jobs = [job if job.status.terminal else _job_json(job) for job in plane.jobs.values()]
    runs = [run if run.status.terminal else _run_json(run) for run in plane.runs.values()]
    events, usage, audit = list(plane.events), list(plane.usage.records), list(plane.audit.entries)
    head = _small_sections(plane, stored)

    def finish() -> dict[str, Any]:
        sections: dict[str, Iterator[dict[str, Any]]] = {
            "jobs": (job if isinstance(job, dict) else _job_json(job) for job in jobs),
            "runs": (run if isinstance(run, dict) else _run_json(run) for run in runs),
            # What the bounded logs retained, oldest first (each record is ids, names,
            # numbers and JSON its caller gave: never a raw key or the JWT secret).
            "events": (attrs.asdict(event) for event in events),
            "usage": (attrs.asdict(record) for record in usage),
            "audit": (attrs.asdict(entry) for entry in audit),
        }
        if lazy:
            return {**head, **sections}
        return {**head, **{name: list(records) for name, records in sections.items()}}

    return finish


def _job_json(job: Job) -> dict[str, Any]:
    return {**attrs.asdict(job), "status": job.status.value}


def _small_sections(plane: ControlPlane, stored: Container[str]) -> dict[str, Any]:
    """Everything but jobs, runs and the logs: tenancy, keys, definitions, idempotency keys,
    asset metadata (rendered on the loop: they are few, and some may still change)."""
    tenancy = plane.tenancy
    return {
        "version": VERSION,
        "organizations": [attrs.asdict(org) for org in tenancy.organizations.values()],
        "teams": [attrs.asdict(team) for team in tenancy.teams.values()],
        "memberships": [_membership(m) for m in tenancy.memberships.values()],
        "team_memberships": [_membership(m) for m in tenancy.team_memberships.values()],
        "invitations": [
            {**attrs.asdict(inv), "role": inv.role.value, "status": inv.status.value}
            for inv in tenancy.invitations.values()
        ],
        "api_keys": [
            {**attrs.asdict(key), "scopes": list(key.scopes), "status": key.status.value}
            for key in plane.keys.by_id.values()
        ],
        "workflow_definitions": [
            {
                "id": d.id,
                "organization_id": d.organization_id,
                "name": d.name,
                "nodes": [dict(node.raw) for node in d.nodes],
                "defaults": d.defaults,
                "created_by": d.created_by,
                "created_at": d.created_at,
                "updated_at": d.updated_at,
                "version": d.version,
            }
            for d in plane.definitions.values()
        ],
        "idempotency": [
            {
                "organization_id": org,
                "route": route,
                "key": key,
                "fingerprint": fingerprint,
                "resource_id": resource_id,
            }
            for (org, route, key), (fingerprint, resource_id) in plane.idempotency.entries.items()
        ],
        "assets": [
            {name: getattr(asset, name) for name in ASSET_FIELDS}
            for asset in plane.assets.assets.values()
            if asset.id in stored
        ],
    }


# An asset's saved fields: its metadata (the bytes live in the asset directory).
ASSET_FIELDS = (
    "id",
    "organization_id",
    "filename",
    "content_type",
    "size_bytes",
    "sha256",
    "created_by",
    "created_at",
)


# A run's plain fields as saved (its status and nodes are saved apart).
RUN_FIELDS = (
    "id",
    "organization_id",
    "workflow_definition_id",
    "workflow_name",
    "context",
    "created_by",
    "created_at",
    "metadata",
    "environment",
    "priority",
    "job_id",
    "api_key_id",
    "output",
    "error",
    "started_at",
    "completed_at",
)


def _run_json(run: WorkflowRun) -> dict[str, Any]:
    return {
        **{name: getattr(run, name) for name in RUN_FIELDS},
        "status": run.status.value,
        "nodes": [
            {
                "key": node.definition.key,
                "operation": node.definition.operation,
                "runtime": node.definition.runtime,
                "config": dict(node.definition.config),
                "depends_on": list(node.definition.depends_on),
                "raw": dict(node.definition.raw),
                "status": node.status.value,
                "output": node.output,
                "error": node.error,
                "attempts": node.attempts,
                "started_at": node.started_at,
                "completed_at": node.completed_at,
            }
            for node in run.nodes.values()
        ],
    }


# Reading -----------------------------------------------------------------------------------
# Each saved record is a mapping with exactly its keys, read with the platform's path reader
# (a malformed one is a ValueError naming its path, e.g. `fabric.api_keys[0].status`).


def _org(node: Node) -> Organization:
    f = node.fields(optional=("id", "slug", "name", "created_at", "updated_at", "archived"))
    return Organization(
        id=f.str("id"),
        slug=f.str("slug"),
        name=f.str("name"),
        created_at=f.float("created_at"),
        updated_at=f.float("updated_at"),
        archived=f.bool("archived"),
    )


def _team(node: Node) -> Team:
    f = node.fields(optional=("id", "organization_id", "slug", "name", "created_at", "archived"))
    return Team(
        id=f.str("id"),
        organization_id=f.str("organization_id"),
        slug=f.str("slug"),
        name=f.str("name"),
        created_at=f.float("created_at"),
        archived=f.bool("archived"),
    )


def _member(node: Node) -> Membership:
    f = node.fields(
        optional=(
            "id",
            "principal_id",
            "organization_id",
            "role",
            "created_at",
            "team_id",
            "active",
        )
    )
    return Membership(
        id=f.str("id"),
        principal_id=f.str("principal_id"),
        organization_id=f.str("organization_id"),
        role=f.choice("role", Role),
        created_at=f.float("created_at"),
        team_id=f.opt_str("team_id"),
        active=f.bool("active"),
    )


def _invitation(node: Node) -> Invitation:
    f = node.fields(
        optional=(
            "id",
            "organization_id",
            "email",
            "role",
            "team_id",
            "invited_by",
            "created_at",
            "expires_at",
            "status",
            "accepted_by",
            "accepted_at",
        )
    )
    return Invitation(
        id=f.str("id"),
        organization_id=f.str("organization_id"),
        email=f.str("email"),
        role=f.choice("role", Role),
        team_id=f.opt_str("team_id"),
        invited_by=f.str("invited_by"),
        created_at=f.float("created_at"),
        expires_at=f.float("expires_at"),
        status=f.choice("status", InvitationStatus),
        accepted_by=f.opt_str("accepted_by"),
        accepted_at=f.opt_float("accepted_at"),
    )


def _key(node: Node) -> ApiKey:
    f = node.fields(
        optional=(
            "id",
            "name",
            "prefix",
            "key_hash",
            "organization_id",
            "principal_id",
            "scopes",
            "created_at",
            "description",
            "team_id",
            "expires_at",
            "last_used_at",
            "status",
        )
    )
    return ApiKey(
        id=f.str("id"),
        name=f.str("name"),
        prefix=f.str("prefix"),
        key_hash=f.str("key_hash"),
        organization_id=f.str("organization_id"),
        principal_id=f.str("principal_id"),
        scopes=f.str_list("scopes"),
        created_at=f.float("created_at"),
        description=f.opt_str("description", allow_empty=True),
        team_id=f.opt_str("team_id"),
        expires_at=f.opt_float("expires_at"),
        last_used_at=f.opt_float("last_used_at"),
        status=f.choice("status", KeyStatus),
    )


def _definition(node: Node) -> WorkflowDefinition:
    f = node.fields(
        optional=(
            "id",
            "organization_id",
            "name",
            "nodes",
            "defaults",
            "created_by",
            "created_at",
            "updated_at",
            "version",
        )
    )
    try:
        nodes, defaults = parse_nodes(node.value.get("nodes"), node.value.get("defaults"))
    except FabricError as error:
        raise f["nodes"].error(error.message) from None
    return WorkflowDefinition(
        id=f.str("id"),
        organization_id=f.str("organization_id"),
        name=f.str("name"),
        nodes=nodes,
        defaults=defaults,
        created_by=f.str("created_by"),
        created_at=f.float("created_at"),
        updated_at=f.float("updated_at"),
        version=f.int("version", minimum=1),
    )


JOB_FIELDS = (
    "id",
    "organization_id",
    "workflow_run_id",
    "modality",
    "input",
    "params",
    "tier",
    "model",
    "idempotency_key",
    "estimated_cost_usd",
    "created_by",
    "created_at",
    "updated_at",
    "status",
    "output",
    "error",
    "provider_id",
    "usage",
    "started_at",
    "completed_at",
)


def _json_object(node: Node | None) -> dict[str, Any] | None:
    if node is None or node.value is None:
        return None
    value = node.as_json()
    if not isinstance(value, dict):
        raise node.error("must be an object")
    return value


def _job(node: Node, now: float) -> tuple[Job, bool]:
    """The job, and whether the restore ended it (it had not finished)."""
    f = node.fields(optional=JOB_FIELDS)
    job = Job(
        id=f.str("id"),
        organization_id=f.str("organization_id"),
        workflow_run_id=f.str("workflow_run_id"),
        modality=f.str("modality"),
        input=f["input"].as_json(),
        params=_json_object(f.get("params")) or {},
        tier=f.opt_str("tier"),
        model=f.opt_str("model"),
        idempotency_key=f.opt_str("idempotency_key"),
        estimated_cost_usd=f.float("estimated_cost_usd"),
        created_by=f.str("created_by"),
        created_at=f.float("created_at"),
        updated_at=f.float("updated_at"),
        status=f.choice("status", JobStatus),
        output=f["output"].as_json() if f.has("output") else None,
        error=f.opt_str("error", allow_empty=True),
        provider_id=f.opt_str("provider_id"),
        usage=_json_object(f.get("usage")),
        started_at=f.opt_float("started_at"),
        completed_at=f.opt_float("completed_at"),
    )
    interrupted = not job.status.terminal
    if interrupted:
        apply_job(job, JobEvent.FAIL, now)
        job.error = RESTARTED
    return job, interrupted


def _node_run(node: Node, run_ended: bool, now: float) -> NodeRun:
    f = node.fields(
        optional=(
            "key",
            "operation",
            "runtime",
            "config",
            "depends_on",
            "raw",
            "status",
            "output",
            "error",
            "attempts",
            "started_at",
            "completed_at",
        )
    )
    definition = NodeDefinition(
        key=f.str("key"),
        operation=f.str("operation"),
        runtime=f.str("runtime"),
        config=_json_object(f.get("config")) or {},
        # A restored run never executes again: its bindings are not needed.
        inputs=(),
        outputs=(),
        depends_on=f.str_list("depends_on"),
        raw=_json_object(f.get("raw")) or {},
    )
    run = NodeRun(
        definition=definition,
        status=f.choice("status", NodeStatus),
        output=f["output"].as_json() if f.has("output") else None,
        error=f.opt_str("error", allow_empty=True),
        attempts=f.int("attempts", minimum=0),
        started_at=f.opt_float("started_at"),
        completed_at=f.opt_float("completed_at"),
    )
    if run_ended and run.status is NodeStatus.RUNNING:
        apply_node(run, NodeEvent.FAIL, now)
        run.error = RESTARTED
    elif run_ended and run.status in (NodeStatus.PENDING, NodeStatus.READY):
        apply_node(run, NodeEvent.SKIP, now)
    return run


@attrs.frozen
class Interruption:
    """A run the restore ended as failed: the keys of the nodes it failed and skipped."""

    run: WorkflowRun
    failed: tuple[str, ...]
    skipped: tuple[str, ...]


def _run(node: Node, now: float) -> tuple[WorkflowRun, Interruption | None]:
    f = node.fields(optional=(*RUN_FIELDS, "status", "nodes"))
    status = f.choice("status", RunStatus)
    unfinished = not status.terminal
    saved = [n.value.get("status") if isinstance(n.value, dict) else None for n in f.list("nodes")]
    nodes = [_node_run(n, unfinished, now) for n in f.list("nodes")]
    run = WorkflowRun(
        id=f.str("id"),
        organization_id=f.str("organization_id"),
        workflow_definition_id=f.opt_str("workflow_definition_id"),
        workflow_name=f.opt_str("workflow_name", allow_empty=True),
        nodes={n.definition.key: n for n in nodes},
        context=_json_object(f.get("context")) or {},
        created_by=f.str("created_by"),
        created_at=f.float("created_at"),
        metadata=_json_object(f.get("metadata")),
        environment=f.opt_str("environment", allow_empty=True),
        priority=f.opt_int("priority"),
        job_id=f.opt_str("job_id"),
        api_key_id=f.opt_str("api_key_id"),
        status=status,
        output=f["output"].as_json() if f.has("output") else None,
        error=f.opt_str("error", allow_empty=True),
        started_at=f.opt_float("started_at"),
        completed_at=f.opt_float("completed_at"),
    )
    if not unfinished:
        return run, None
    apply_run(run, RunEvent.FAIL, now)
    run.error = RESTARTED
    changed = [
        (n.definition.key, n.status)
        for n, was in zip(nodes, saved, strict=True)
        if n.status.value != was
    ]
    return run, Interruption(
        run,
        failed=tuple(key for key, status in changed if status is NodeStatus.FAILED),
        skipped=tuple(key for key, status in changed if status is NodeStatus.SKIPPED),
    )


def _idempotency(node: Node) -> tuple[tuple[str, str, str], tuple[str, str]]:
    f = node.fields(optional=("organization_id", "route", "key", "fingerprint", "resource_id"))
    return (f.str("organization_id"), f.str("route"), f.str("key")), (
        f.str("fingerprint", allow_empty=True),
        f.str("resource_id"),
    )


EVENT_FIELDS = tuple(field.name for field in attrs.fields(DomainEvent))


def _event(node: Node) -> DomainEvent:
    f = node.fields(optional=EVENT_FIELDS)
    return DomainEvent(
        id=f.str("id"),
        sequence=f.int("sequence", minimum=1),
        name=f.str("name"),
        timestamp=f.float("timestamp"),
        organization_id=f.opt_str("organization_id"),
        job_id=f.opt_str("job_id"),
        workflow_id=f.opt_str("workflow_id"),
        run_id=f.opt_str("run_id"),
        node_key=f.opt_str("node_key"),
        payload=_json_object(f.get("payload")) or {},
    )


def _events(nodes: list[Node], retention: int, new_id: Callable[[], str]) -> EventLog:
    """The saved log: unique ids, sequences rising by one from entry to entry."""
    events = [_event(n) for n in nodes]
    check_unique(((n, e.id) for n, e in zip(nodes, events, strict=True)), "event id")
    for index in range(1, len(events)):
        expected = events[index - 1].sequence + 1
        if events[index].sequence != expected:
            raise (
                nodes[index]
                .fields(optional=EVENT_FIELDS)["sequence"]
                .error(f"must be {expected} (the saved sequences rise by one)")
            )
    return EventLog.restored(new_id, retention, events)


USAGE_FIELDS = tuple(field.name for field in attrs.fields(UsageRecord))


def _usage(node: Node) -> UsageRecord:
    f = node.fields(optional=USAGE_FIELDS)
    return UsageRecord(
        id=f.str("id"),
        organization_id=f.str("organization_id"),
        principal_id=f.str("principal_id"),
        api_key_id=f.opt_str("api_key_id"),
        job_id=f.opt_str("job_id"),
        workflow_run_id=f.opt_str("workflow_run_id"),
        node_key=f.opt_str("node_key"),
        provider_id=f.str("provider_id"),
        model=f.str("model", allow_empty=True),
        modality=f.str("modality"),
        input_tokens=f.int("input_tokens", minimum=0),
        output_tokens=f.int("output_tokens", minimum=0),
        estimated_cost_usd=f.float("estimated_cost_usd", minimum=0),
        created_at=f.float("created_at"),
    )


AUDIT_FIELDS = tuple(field.name for field in attrs.fields(AuditEntry))


def _audit(node: Node) -> AuditEntry:
    f = node.fields(optional=AUDIT_FIELDS)
    return AuditEntry(
        id=f.str("id"),
        organization_id=f.opt_str("organization_id"),
        principal_id=f.str("principal_id"),
        api_key_id=f.opt_str("api_key_id"),
        action=f.str("action"),
        resource_type=f.str("resource_type"),
        resource_id=f.str("resource_id"),
        metadata=_json_object(f.get("metadata")) or {},
        request_id=f.opt_str("request_id"),
        created_at=f.float("created_at"),
    )


def _asset(node: Node, files: AssetFiles | None) -> Asset:
    """The asset, with its bytes read from `files` and checked against its size and sha256."""
    f = node.fields(optional=ASSET_FIELDS)
    asset_id = f.str("id")
    if not FILE_NAME.fullmatch(asset_id):
        raise f["id"].error("must be letters, digits, '-' and '_' (it names a file)")
    size = f.int("size_bytes", minimum=1)
    sha256 = f.str("sha256")
    if files is None:
        raise node.error("saved assets need their directory beside the state file")
    try:
        data = files.read(asset_id)
    except OSError as error:
        path = files.path_of(asset_id)
        raise node.error(f"cannot read its bytes from {path} ({error.strerror})") from None
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        raise node.error(f"the bytes in {files.path_of(asset_id)} are not the ones saved")
    return Asset(
        id=asset_id,
        organization_id=f.str("organization_id"),
        filename=f.str("filename"),
        content_type=f.str("content_type"),
        size_bytes=size,
        sha256=sha256,
        created_by=f.str("created_by"),
        created_at=f.float("created_at"),
        chunks=(data,),
    )


def restore(plane: ControlPlane, data: dict[str, Any], files: AssetFiles | None = None) -> None:
    """Lay saved state over the plane's (seeded) state; ValueError and no change on bad data.
    `files` holds the bytes of the saved assets (None: the data must name no asset)."""
    root = Node(data, "fabric", "", plain_failure)
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise root.error(f"the saved Fabric state must be an object with version {VERSION}")
    f = root.fields(
        optional=(
            "version",
            "organizations",
            "teams",
            "memberships",
            "team_memberships",
            "invitations",
            "api_keys",
            "workflow_definitions",
            "jobs",
            "runs",
            "idempotency",
            "events",
            "usage",
            "audit",
            "assets",
        )
    )
    orgs = [_org(n) for n in f.list("organizations")]
    teams = [_team(n) for n in f.list("teams")]
    members = [_member(n) for n in f.list("memberships")]
    team_members = [_member(n) for n in f.list("team_memberships")]
    invitations = [_invitation(n) for n in f.list("invitations")]
    keys = [_key(n) for n in f.list("api_keys")]
    definitions = [_definition(n) for n in f.list("workflow_definitions")]
    now = plane.now()
    # Files written before jobs and runs were kept have neither.
    read_jobs = [_job(n, now) for n in f.list("jobs")] if f.has("jobs") else []
    read_runs = [_run(n, now) for n in f.list("runs")] if f.has("runs") else []
    jobs = [job for job, _ in read_jobs]
    runs = [run for run, _ in read_runs]
    keyed = [_idempotency(n) for n in f.list("idempotency")] if f.has("idempotency") else []
    # Files written before the logs were kept have none of them: the plane keeps its own.
    config = plane.config
    events = (
        _events(f.list("events"), config.event_retention, plane.new_id) if f.has("events") else None
    )
    usage = [_usage(n) for n in f.list("usage")] if f.has("usage") else None
    audit = [_audit(n) for n in f.list("audit")] if f.has("audit") else None
    asset_nodes = f.list("assets") if f.has("assets") else None
    assets = None if asset_nodes is None else [_asset(n, files) for n in asset_nodes]
    if asset_nodes is not None and assets is not None:
        check_unique(((n, a.id) for n, a in zip(asset_nodes, assets, strict=True)), "asset id")
    run_ids = {run.id for run in runs} | set(plane.runs)
    for job in jobs:
        if job.workflow_run_id not in run_ids:
            raise root.error(f"job {job.id} names an unknown workflow run")
    if any(member.team_id is None for member in team_members):
        raise f["team_memberships"].error("every team membership needs a team_id")
    known_orgs = set(plane.tenancy.organizations) | {org.id for org in orgs}
    for name, records in (("teams", teams), ("memberships", members), ("api_keys", keys)):
        for record in records:
            if record.organization_id not in known_orgs:
                raise root.error(f"{name} names an unknown organization")
    for node, asset in zip(asset_nodes or [], assets or [], strict=True):
        if asset.organization_id not in known_orgs:
            raise node.error(f"asset {asset.id} names an unknown organization")
    prefixes = {key.prefix: key.id for key in plane.keys.by_id.values()}
    for key in keys:
        if prefixes.get(key.prefix, key.id) != key.id:
            raise root.error(f"api key prefix {key.prefix} is taken by another key")
    ended_jobs = {job.id for job, interrupted in read_jobs if interrupted}
    # Everything is read and checked: now change state.
    tenancy = plane.tenancy
    for org in orgs:
        tenancy.organizations[org.id] = org
    for team in teams:
        tenancy.teams[team.id] = team
    for member in members:
        tenancy.memberships[(member.organization_id, member.principal_id)] = member
    for member in team_members:
        assert member.team_id is not None  # checked above
        tenancy.team_memberships[(member.team_id, member.principal_id)] = member
    for invitation in invitations:
        tenancy.invitations[invitation.id] = invitation
    tenancy.reindex()
    for key in keys:
        old = plane.keys.by_id.get(key.id)
        if old is not None:
            plane.keys.by_prefix.pop(old.prefix, None)
        if key.status is not KeyStatus.REVOKED:
            plane.keys.by_id[key.id] = key
            plane.keys.by_prefix[key.prefix] = key
    for definition in definitions:
        plane.definitions[definition.id] = definition
    for run in runs:
        plane.runs[run.id] = run
    for job in jobs:
        plane.jobs[job.id] = job
    kept = set(plane.jobs) | set(plane.runs)
    for named, (fingerprint, resource_id) in keyed:
        if resource_id in kept:
            plane.idempotency.entries[named] = (fingerprint, resource_id)
            plane.idempotency.by_resource[resource_id] = named
    # The saved logs replace the plane's (a freshly seeded plane has none yet).
    if events is not None:
        plane.events = events
    if usage is not None:
        plane.usage = UsageLedger(config.usage_retention)
        for used in usage:
            plane.usage.add(used)
    if audit is not None:
        plane.audit = AuditLog(config.audit_retention)
        for entry in audit:
            plane.audit.add(entry)
    if assets is not None:
        store = plane.assets
        for asset in assets:
            replaced = store.assets.get(asset.id)
            if replaced is not None:
                store.total_bytes -= replaced.size_bytes
            # Kept even past the store's bounds (a seed may have lowered them): they are
            # stored data; new uploads are refused until there is room.
            store.assets[asset.id] = asset
            store.total_bytes += asset.size_bytes
        if files is not None:
            files.prune({asset.id for asset in assets})
    # What the restore ended is announced as the engine would have: each stream of such a run
    # or job closes with its failed event, continuing the restored sequence.
    announced: set[str] = set()
    for _, interruption in read_runs:
        if interruption is None:
            continue
        run = interruption.run
        plane.announce_interrupted_run(run, interruption.failed, interruption.skipped)
        backing = plane.jobs.get(run.job_id) if run.job_id is not None else None
        if backing is not None and backing.id in ended_jobs:
            plane.announce_interrupted_job(backing)
            announced.add(backing.id)
    for job in jobs:
        if job.id in ended_jobs and job.id not in announced:
            plane.announce_interrupted_job(job)
