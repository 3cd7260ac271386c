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

from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from .core.apikeys import ApiKey, KeyStatus
from .core.errors import FabricError
from .core.plane import ControlPlane
from .core.tenancy import Invitation, InvitationStatus, Membership, Organization, Role, Team
from .core.workflows import WorkflowDefinition, parse_nodes

VERSION = 1
T = TypeVar("T")


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


def _items(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError(f"fabric state: {name} must be a list of objects")
    return value


def _field(item: dict[str, Any], name: str, kind: type[T], where: str, optional: bool = False) -> T:
    value = item.get(name)
    if value is None and optional:
        return value  # type: ignore[return-value]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"fabric state: {where}.{name} must be {kind.__name__}")
    return value


def _read_all(
    data: dict[str, Any], name: str, build: Callable[[dict[str, Any], str], T]
) -> list[T]:
    found = []
    for index, item in enumerate(_items(data, name)):
        where = f"{name}[{index}]"
        try:
            found.append(build(item, where))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"fabric state: {where} is malformed ({error})") from None
        except FabricError as error:
            raise ValueError(f"fabric state: {where}: {error.message}") from None
    return found


def _org(item: dict[str, Any], where: str) -> Organization:
    return Organization(
        id=_field(item, "id", str, where),
        slug=_field(item, "slug", str, where),
        name=_field(item, "name", str, where),
        created_at=_field(item, "created_at", float, where),
        updated_at=_field(item, "updated_at", float, where),
        archived=_field(item, "archived", bool, where),
    )


def _team(item: dict[str, Any], where: str) -> Team:
    return Team(
        id=_field(item, "id", str, where),
        organization_id=_field(item, "organization_id", str, where),
        slug=_field(item, "slug", str, where),
        name=_field(item, "name", str, where),
        created_at=_field(item, "created_at", float, where),
        archived=_field(item, "archived", bool, where),
    )


def _member(item: dict[str, Any], where: str) -> Membership:
    return Membership(
        id=_field(item, "id", str, where),
        principal_id=_field(item, "principal_id", str, where),
        organization_id=_field(item, "organization_id", str, where),
        role=Role.parse(item.get("role")),
        created_at=_field(item, "created_at", float, where),
        team_id=_field(item, "team_id", str, where, optional=True),
        active=_field(item, "active", bool, where),
    )


def _invitation(item: dict[str, Any], where: str) -> Invitation:
    return Invitation(
        id=_field(item, "id", str, where),
        organization_id=_field(item, "organization_id", str, where),
        email=_field(item, "email", str, where),
        role=Role.parse(item.get("role")),
        team_id=_field(item, "team_id", str, where, optional=True),
        invited_by=_field(item, "invited_by", str, where),
        created_at=_field(item, "created_at", float, where),
        expires_at=_field(item, "expires_at", float, where),
        status=InvitationStatus(_field(item, "status", str, where)),
        accepted_by=_field(item, "accepted_by", str, where, optional=True),
        accepted_at=_field(item, "accepted_at", float, where, optional=True),
    )


def _key(item: dict[str, Any], where: str) -> ApiKey:
    scopes = item.get("scopes")
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ValueError(f"fabric state: {where}.scopes must be a list of strings")
    return ApiKey(
        id=_field(item, "id", str, where),
        name=_field(item, "name", str, where),
        prefix=_field(item, "prefix", str, where),
        key_hash=_field(item, "key_hash", str, where),
        organization_id=_field(item, "organization_id", str, where),
        principal_id=_field(item, "principal_id", str, where),
        scopes=tuple(scopes),
        created_at=_field(item, "created_at", float, where),
        description=_field(item, "description", str, where, optional=True),
        team_id=_field(item, "team_id", str, where, optional=True),
        expires_at=_field(item, "expires_at", float, where, optional=True),
        last_used_at=_field(item, "last_used_at", float, where, optional=True),
        status=KeyStatus(_field(item, "status", str, where)),
    )


def _definition(item: dict[str, Any], where: str) -> WorkflowDefinition:
    nodes, defaults = parse_nodes(item.get("nodes"), item.get("defaults"))
    return WorkflowDefinition(
        id=_field(item, "id", str, where),
        organization_id=_field(item, "organization_id", str, where),
        name=_field(item, "name", str, where),
        nodes=nodes,
        defaults=defaults,
        created_by=_field(item, "created_by", str, where),
        created_at=_field(item, "created_at", float, where),
        updated_at=_field(item, "updated_at", float, where),
        version=_field(item, "version", int, where),
    )


def restore(plane: ControlPlane, data: dict[str, Any]) -> None:
    """Lay saved state over the plane's (seeded) state; ValueError and no change on bad data."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"fabric state: expected an object with version {VERSION}")
    orgs = _read_all(data, "organizations", _org)
    teams = _read_all(data, "teams", _team)
    members = _read_all(data, "memberships", _member)
    team_members = _read_all(data, "team_memberships", _member)
    invitations = _read_all(data, "invitations", _invitation)
    keys = _read_all(data, "api_keys", _key)
    definitions = _read_all(data, "workflow_definitions", _definition)
    if any(member.team_id is None for member in team_members):
        raise ValueError("fabric state: team_memberships need a team_id")
    known_orgs = set(plane.tenancy.organizations) | {org.id for org in orgs}
    for name, records in (("teams", teams), ("memberships", members), ("api_keys", keys)):
        for record in records:
            if record.organization_id not in known_orgs:
                raise ValueError(f"fabric state: {name} names unknown organization")
    prefixes = {key.prefix: key.id for key in plane.keys.by_id.values()}
    for key in keys:
        if prefixes.get(key.prefix, key.id) != key.id:
            raise ValueError(f"fabric state: api key prefix {key.prefix} is taken")
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
