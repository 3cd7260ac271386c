"""Roles, organizations, teams and invitations (sync, table-driven)."""

from __future__ import annotations

import pytest
from fabric_support import ALICE, BOB, CAROL, DAVE, EVE, dev, make_world

from emulator.fabric.core.errors import (
    Conflict,
    FabricError,
    Forbidden,
    IllegalTransition,
    NotFound,
    ValidationFailed,
)
from emulator.fabric.core.tenancy import (
    DEFAULT_ORG_ID,
    INVITATION_TRANSITIONS,
    Action,
    InvitationEvent,
    InvitationStatus,
    Role,
    action_from_name,
    apply_invitation,
)


@pytest.mark.parametrize(
    ("principal", "action", "expected"),
    [
        (BOB, Action.READ, None),
        (BOB, Action.WRITE, Forbidden),
        (CAROL, Action.WRITE, None),
        (CAROL, Action.EXECUTE, None),
        (CAROL, Action.ADMIN, Forbidden),
        (DAVE, Action.ADMIN, None),
        (ALICE, Action.ADMIN, None),
        (EVE, Action.READ, NotFound),
    ],
)
def test_require_follows_the_role_ladder(
    principal: str, action: Action, expected: type[FabricError] | None
) -> None:
    world = make_world()
    if expected is None:
        world.plane.tenancy.require(principal, world.acme, action)
    else:
        with pytest.raises(expected):
            world.plane.tenancy.require(principal, world.acme, action)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("read", Action.READ),
        ("jobs:write", Action.WRITE),
        ("teams:create", Action.WRITE),
        ("x:update", Action.WRITE),
        ("providers:execute", Action.EXECUTE),
        ("members:invite", Action.ADMIN),
        ("keys:delete", Action.ADMIN),
        ("org:manage", Action.ADMIN),
        ("jobs:frobnicate", None),
    ],
)
def test_action_names_map_by_verb(name: str, expected: Action | None) -> None:
    assert action_from_name(name) is expected


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("ok-slug", None),
        ("a", ValidationFailed),
        ("Upper", ValidationFailed),
        ("-lead", ValidationFailed),
        ("acme", Conflict),
    ],
)
def test_organization_slugs(slug: str, expected: type[FabricError] | None) -> None:
    world = make_world()
    before = dict(world.plane.tenancy.organizations)
    if expected is None:
        org = world.plane.create_organization(dev(EVE), {"slug": slug, "name": "N"})
        assert world.plane.tenancy.role_in(EVE, org.id) is Role.OWNER
    else:
        with pytest.raises(expected):
            world.plane.create_organization(dev(EVE), {"slug": slug, "name": "N"})
        assert world.plane.tenancy.organizations == before


def test_default_org_exists_at_start() -> None:
    world = make_world()
    org = world.plane.tenancy.organizations[DEFAULT_ORG_ID]
    assert (org.slug, org.name) == ("default", "Default Organization")


@pytest.mark.parametrize(
    ("creator", "expected"),
    [(DAVE, None), (ALICE, None), (CAROL, Forbidden), (BOB, Forbidden), (EVE, NotFound)],
)
def test_team_creation_needs_admin(creator: str, expected: type[FabricError] | None) -> None:
    world = make_world()
    body = {"organization_id": world.acme, "slug": "core", "name": "Core"}
    if expected is None:
        team = world.plane.create_team(dev(creator), body)
        assert team.organization_id == world.acme
        assert world.plane.tenancy.team_memberships[(team.id, creator)].role is Role.ADMIN
    else:
        with pytest.raises(expected):
            world.plane.create_team(dev(creator), body)
        assert not world.plane.tenancy.teams


def test_duplicate_team_slug_conflicts() -> None:
    world = make_world()
    body = {"organization_id": world.acme, "slug": "core", "name": "Core"}
    world.plane.create_team(dev(DAVE), body)
    with pytest.raises(Conflict):
        world.plane.create_team(dev(DAVE), body)


@pytest.mark.parametrize(
    ("inviter", "role", "email", "expected"),
    [
        (DAVE, "member", "x@example.com", None),
        (DAVE, "owner", "x@example.com", Forbidden),
        (ALICE, "owner", "x@example.com", None),
        (CAROL, "viewer", "x@example.com", Forbidden),
        (DAVE, "emperor", "x@example.com", ValidationFailed),
        (DAVE, "member", "no-at-sign", ValidationFailed),
    ],
)
def test_invitation_rules(
    inviter: str, role: str, email: str, expected: type[FabricError] | None
) -> None:
    world = make_world()
    body = {"organization_id": world.acme, "email": email, "role": role}
    if expected is None:
        invitation = world.plane.create_invitation(dev(inviter), body)
        assert invitation.status is InvitationStatus.PENDING
    else:
        with pytest.raises(expected):
            world.plane.create_invitation(dev(inviter), body)
        assert not world.plane.tenancy.invitations


def test_accepting_grants_the_role_and_a_second_accept_conflicts() -> None:
    world = make_world()
    body = {"organization_id": world.acme, "email": "eve@example.com", "role": "admin"}
    invitation = world.plane.create_invitation(dev(DAVE), body)
    with pytest.raises(Conflict):
        world.plane.create_invitation(dev(DAVE), body)
    world.plane.accept_invitation(dev(EVE), invitation.id)
    assert world.plane.tenancy.role_in(EVE, world.acme) is Role.ADMIN
    assert invitation.accepted_by == EVE
    with pytest.raises(Conflict):
        world.plane.accept_invitation(dev(EVE), invitation.id)
    with pytest.raises(Conflict):
        world.plane.revoke_invitation(dev(DAVE), invitation.id)


def test_expired_invitation_cannot_be_accepted() -> None:
    world = make_world()
    body = {"organization_id": world.acme, "email": "eve@example.com", "role": "member"}
    invitation = world.plane.create_invitation(dev(DAVE), body)
    world.clock.advance(8 * 24 * 3600)
    with pytest.raises(Conflict):
        world.plane.accept_invitation(dev(EVE), invitation.id)
    assert invitation.status is InvitationStatus.EXPIRED
    assert world.plane.tenancy.role_in(EVE, world.acme) is None


@pytest.mark.parametrize("status", list(InvitationStatus))
@pytest.mark.parametrize("event", list(InvitationEvent))
def test_invitation_machine_is_its_table(status: InvitationStatus, event: InvitationEvent) -> None:
    world = make_world()
    body = {"organization_id": world.acme, "email": "t@example.com", "role": "member"}
    invitation = world.plane.create_invitation(dev(DAVE), body)
    invitation.status = status  # arranging the state under test
    target = INVITATION_TRANSITIONS.table.get((status, event))
    if target is None:
        with pytest.raises(IllegalTransition):
            apply_invitation(invitation, event)
        assert invitation.status is status
    else:
        apply_invitation(invitation, event)
        assert invitation.status is target
