"""Fabric's durable state for `--state-file`: who exists, how they authenticate, and the
workflow definitions they wrote.

Owns `snapshot` (organizations, teams, memberships, invitations, API keys as hashes, workflow
definitions, as JSON-ready data) and `restore` (reads all of it first, raising ValueError and
changing nothing on bad data, then lays it over the seeded state by id). Jobs, runs, events,
usage, audit entries and assets are not kept: a restart begins with none (docs/fabric/
limitations.md). The file may hold key hashes; the platform writes it with mode 0600.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..platform.seedschema import Node, plain_failure
from .core.apikeys import ApiKey, KeyStatus
from .core.errors import FabricError
from .core.plane import ControlPlane
from .core.tenancy import Invitation, InvitationStatus, Membership, Organization, Role, Team
from .core.workflows import WorkflowDefinition, parse_nodes

VERSION = 1


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


def snapshot(plane: ControlPlane) -> dict[str, Any]:
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


def restore(plane: ControlPlane, data: dict[str, Any]) -> None:
    """Lay saved state over the plane's (seeded) state; ValueError and no change on bad data."""
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
        )
    )
    orgs = [_org(n) for n in f.list("organizations")]
    teams = [_team(n) for n in f.list("teams")]
    members = [_member(n) for n in f.list("memberships")]
    team_members = [_member(n) for n in f.list("team_memberships")]
    invitations = [_invitation(n) for n in f.list("invitations")]
    keys = [_key(n) for n in f.list("api_keys")]
    definitions = [_definition(n) for n in f.list("workflow_definitions")]
    if any(member.team_id is None for member in team_members):
        raise f["team_memberships"].error("every team membership needs a team_id")
    known_orgs = set(plane.tenancy.organizations) | {org.id for org in orgs}
    for name, records in (("teams", teams), ("memberships", members), ("api_keys", keys)):
        for record in records:
            if record.organization_id not in known_orgs:
                raise root.error(f"{name} names an unknown organization")
    prefixes = {key.prefix: key.id for key in plane.keys.by_id.values()}
    for key in keys:
        if prefixes.get(key.prefix, key.id) != key.id:
            raise root.error(f"api key prefix {key.prefix} is taken by another key")
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
