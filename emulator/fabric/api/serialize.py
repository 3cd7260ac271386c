"""JSON shapes of Fabric's records, as the fabric-platform 0.7.2 models read them.

Owns one function per record (organization, team, membership, invitation, API key, job, job
page, workflow definition and run, asset, usage summary and record, audit entry, domain event).
Core records never know their JSON; these functions are the only place that does. No function
here ever writes a key hash or a raw key, except `created_api_key`, which is the one answer that
carries the raw key. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from typing import Any

from ..core.apikeys import ApiKey
from ..core.assets import Asset
from ..core.events import DomainEvent
from ..core.jobs import Job, JobPage
from ..core.ledger import AuditEntry, Breakdown, UsageRecord, UsageSummary
from ..core.tenancy import Invitation, Membership, Organization, Team
from ..core.workflows import WorkflowDefinition, WorkflowRun
from .envelope import rfc3339


def organization(org: Organization) -> dict[str, Any]:
    return {
        "id": org.id,
        "slug": org.slug,
        "name": org.name,
        "archived": org.archived,
        "created_at": rfc3339(org.created_at),
        "updated_at": rfc3339(org.updated_at),
    }


def team(item: Team) -> dict[str, Any]:
    return {
        "id": item.id,
        "organization_id": item.organization_id,
        "slug": item.slug,
        "name": item.name,
        "archived": item.archived,
        "created_at": rfc3339(item.created_at),
    }


def membership(item: Membership) -> dict[str, Any]:
    return {
        "id": item.id,
        "principal_id": item.principal_id,
        "organization_id": item.organization_id,
        "team_id": item.team_id,
        "role": item.role.value,
        "active": item.active,
        "created_at": rfc3339(item.created_at),
    }


def invitation(item: Invitation) -> dict[str, Any]:
    return {
        "id": item.id,
        "organization_id": item.organization_id,
        "email": item.email,
        "role": item.role.value,
        "team_id": item.team_id,
        "status": item.status.value,
        "invited_by": item.invited_by,
        "accepted_by": item.accepted_by,
        "accepted_at": rfc3339(item.accepted_at),
        "expires_at": rfc3339(item.expires_at),
        "created_at": rfc3339(item.created_at),
    }


def api_key(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "organization_id": key.organization_id,
        "team_id": key.team_id,
        "description": key.description,
        "scopes": list(key.scopes),
        "disabled": key.disabled,
        "status": key.status.value,
        "expires_at": rfc3339(key.expires_at),
        "last_used_at": rfc3339(key.last_used_at),
        "created_at": rfc3339(key.created_at),
    }


def created_api_key(key: ApiKey, raw: str) -> dict[str, Any]:
    """The creation answer: the only JSON that ever holds the raw key."""
    return {**api_key(key), "key": raw, "raw_key": raw}


def job(item: Job) -> dict[str, Any]:
    return {
        "id": item.id,
        "job_id": item.id,
        "status": item.status.value,
        "workflow_run_id": item.workflow_run_id,
        "organization_id": item.organization_id,
        "modality": item.modality,
        "tier": item.tier,
        "model": item.model,
        "input": item.input,
        "params": item.params,
        "idempotency_key": item.idempotency_key,
        "estimated_cost_usd": item.estimated_cost_usd,
        "output": item.output,
        "error": item.error,
        "provider_id": item.provider_id,
        "usage": item.usage,
        "created_by": item.created_by,
        "created_at": rfc3339(item.created_at),
        "started_at": rfc3339(item.started_at),
        "completed_at": rfc3339(item.completed_at),
        "updated_at": rfc3339(item.updated_at),
    }


def job_page(page: JobPage) -> dict[str, Any]:
    return {
        "items": [job(item) for item in page.items],
        "pagination": {
            "count": len(page.items),
            "limit": page.limit,
            "has_more": page.has_more,
            "next_cursor": page.next_cursor,
        },
    }


def usage_record(record: UsageRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "organization_id": record.organization_id,
        "principal_id": record.principal_id,
        "api_key_id": record.api_key_id,
        "job_id": record.job_id,
        "workflow_run_id": record.workflow_run_id,
        "node_key": record.node_key,
        "provider_id": record.provider_id,
        "model": record.model,
        "modality": record.modality,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "estimated_cost_usd": record.estimated_cost_usd,
        "created_at": rfc3339(record.created_at),
    }


def job_usage(item: Job, records: list[UsageRecord]) -> dict[str, Any]:
    inputs = sum(r.input_tokens for r in records)
    outputs = sum(r.output_tokens for r in records)
    return {
        "job_id": item.id,
        "organization_id": item.organization_id,
        "workflow_run_id": item.workflow_run_id,
        "input_tokens": inputs,
        "output_tokens": outputs,
        "total_tokens": inputs + outputs,
        "estimated_cost_usd": sum(r.estimated_cost_usd for r in records),
        "provider_calls": [
            {
                "provider_id": r.provider_id,
                "model": r.model,
                "modality": r.modality,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "estimated_cost_usd": r.estimated_cost_usd,
                "created_at": rfc3339(r.created_at),
            }
            for r in records
        ],
    }


def definition(item: WorkflowDefinition) -> dict[str, Any]:
    return {
        "id": item.id,
        "organization_id": item.organization_id,
        "name": item.name,
        "version": item.version,
        "nodes": [dict(node.raw) for node in item.nodes],
        "defaults": item.defaults,
        "created_by": item.created_by,
        "created_at": rfc3339(item.created_at),
        "updated_at": rfc3339(item.updated_at),
    }


def run(item: WorkflowRun) -> dict[str, Any]:
    progress = item.progress()
    return {
        "id": item.id,
        "status": item.status.value,
        "progress": {
            "total_tasks": progress.total_tasks,
            "completed_tasks": progress.completed_tasks,
            "current_task": progress.current_task,
            "percentage": progress.percentage,
        },
        "output": item.output,
        "error": item.error,
        "organization_id": item.organization_id,
        "team_id": None,
        "workflow_definition_id": item.workflow_definition_id,
        "workflow_name": item.workflow_name,
        "registry_entry_id": None,
        "sayiir_instance_id": None,
        "job_id": item.job_id,
        "context": item.context,
        "metadata": item.metadata,
        "environment": item.environment,
        "priority": item.priority,
        "created_by": item.created_by,
        "created_at": rfc3339(item.created_at),
        "started_at": rfc3339(item.started_at),
        "completed_at": rfc3339(item.completed_at),
        "nodes": {
            key: {
                "status": node.status.value,
                "output": node.output,
                "error": node.error,
                "attempts": node.attempts,
                "started_at": rfc3339(node.started_at),
                "completed_at": rfc3339(node.completed_at),
            }
            for key, node in item.nodes.items()
        },
    }


def asset(item: Asset) -> dict[str, Any]:
    return {
        "id": item.id,
        "organization_id": item.organization_id,
        "kind": item.kind,
        "content_type": item.content_type,
        "size_bytes": item.size_bytes,
        "filename": item.filename,
        "sha256": item.sha256,
        "created_by": item.created_by,
        "created_at": rfc3339(item.created_at),
    }


def _breakdown(items: list[Breakdown]) -> list[dict[str, Any]]:
    return [
        {
            "key": b.key,
            "calls": b.calls,
            "input_tokens": b.input_tokens,
            "output_tokens": b.output_tokens,
            "cost_usd": b.cost_usd,
        }
        for b in items
    ]


def usage_summary(summary: UsageSummary) -> dict[str, Any]:
    return {
        "organization_id": summary.organization_id,
        "period_start": rfc3339(summary.period_start),
        "period_end": rfc3339(summary.period_end),
        "total_runs": summary.total_runs,
        "total_jobs": summary.total_jobs,
        "total_provider_calls": summary.total_provider_calls,
        "total_input_tokens": summary.total_input_tokens,
        "total_output_tokens": summary.total_output_tokens,
        "total_cost_usd": summary.total_cost_usd,
        "breakdowns": {
            "by_provider": _breakdown(summary.by_provider),
            "by_modality": _breakdown(summary.by_modality),
            "by_principal": _breakdown(summary.by_principal),
            "by_api_key": _breakdown(summary.by_api_key),
        },
    }


def audit_entry(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "organization_id": entry.organization_id,
        "principal_id": entry.principal_id,
        "api_key_id": entry.api_key_id,
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "metadata": entry.metadata,
        "request_id": entry.request_id,
        "created_at": rfc3339(entry.created_at),
    }


def event(item: DomainEvent) -> dict[str, Any]:
    return {
        "id": item.id,
        "kind": item.kind,
        "name": item.name,
        "sequence": item.sequence,
        "organization_id": item.organization_id,
        "job_id": item.job_id,
        "workflow_id": item.workflow_id,
        "run_id": item.run_id,
        "node_key": item.node_key,
        "payload": item.payload,
        "timestamp": rfc3339(item.timestamp),
    }
