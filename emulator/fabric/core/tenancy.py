"""Organizations, teams, memberships, invitations and the role model that authorizes actions.

Owns `Role` (owner > admin > member > viewer), the authz action vocabulary (`Action`,
`action_from_name`), the records `Organization`, `Team`, `Membership`, `Invitation`, the
invitation state machine (`INVITATION_TRANSITIONS` + `apply_invitation`, the only code that
changes an invitation's status) and `Tenancy`, the store. Methods validate first and mutate
second; time comes in as `now` and ids from the injected `new_id`.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

import attrs

from ...platform.statemachine import Transitions
from .errors import Conflict, Forbidden, NotFound, ValidationFailed, transition

DEFAULT_ORG_ID = "00000000-0000-0000-0000-000000000010"
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
INVITATION_LIFETIME = 7 * 24 * 3600.0


class Role(enum.Enum):
    VIEWER = "viewer"
    MEMBER = "member"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def at_least(self, other: Role) -> bool:
        return self.rank >= other.rank

    @classmethod
    def parse(cls, text: object) -> Role:
        for role in cls:
            if role.value == text:
                return role
        raise ValidationFailed("role must be one of owner, admin, member, viewer")


_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Action(enum.Enum):
    """What a role may do in an organization; every route and authz check maps to one."""

    READ = "read"  # viewer+
    WRITE = "write"  # member+
    EXECUTE = "execute"  # member+
    ADMIN = "admin"  # admin+

    @property
    def minimum(self) -> Role:
        return _MINIMUM[self]


_MINIMUM = {
    Action.READ: Role.VIEWER,
    Action.WRITE: Role.MEMBER,
    Action.EXECUTE: Role.MEMBER,
    Action.ADMIN: Role.ADMIN,
}

_VERBS = {
    "read": Action.READ,
    "create": Action.WRITE,
    "write": Action.WRITE,
    "update": Action.WRITE,
    "execute": Action.EXECUTE,
    "delete": Action.ADMIN,
    "manage": Action.ADMIN,
    "invite": Action.ADMIN,
    "admin": Action.ADMIN,
}


def action_from_name(name: str) -> Action | None:
    """`read`, or `<noun>:<verb>` mapped by its verb; None for an unknown verb."""
    verb = name.rsplit(":", 1)[-1]
    return _VERBS.get(verb)


def actions_of(role: Role) -> list[str]:
    return [action.value for action in Action if role.at_least(action.minimum)]


@attrs.define
class Organization:
    id: str
    slug: str
    name: str
    created_at: float
    updated_at: float
    archived: bool = False


@attrs.define
class Team:
    id: str
    organization_id: str
    slug: str
    name: str
    created_at: float
    archived: bool = False


@attrs.define
class Membership:
    id: str
    principal_id: str
    organization_id: str
    role: Role
    created_at: float
    team_id: str | None = None
    active: bool = True


class InvitationStatus(enum.Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"
    EXPIRED = "expired"


class InvitationEvent(enum.Enum):
    ACCEPT = "accept"
    REVOKE = "revoke"
    EXPIRE = "expire"


INVITATION_TRANSITIONS: Transitions[InvitationStatus, InvitationEvent] = Transitions(
    "invitation",
    {
        (InvitationStatus.PENDING, InvitationEvent.ACCEPT): InvitationStatus.ACCEPTED,
        (InvitationStatus.PENDING, InvitationEvent.REVOKE): InvitationStatus.REVOKED,
        (InvitationStatus.PENDING, InvitationEvent.EXPIRE): InvitationStatus.EXPIRED,
    },
)


@attrs.define
class Invitation:
    id: str
    organization_id: str
    email: str
    role: Role
    team_id: str | None
    invited_by: str
    created_at: float
    expires_at: float
    status: InvitationStatus = InvitationStatus.PENDING
    accepted_by: str | None = None
    accepted_at: float | None = None


def apply_invitation(invitation: Invitation, event: InvitationEvent) -> None:
    """The only place an invitation's status changes; illegal events raise and change nothing."""
    invitation.status = transition(INVITATION_TRANSITIONS, invitation.status, event)


@attrs.define
class Tenancy:
    """Every organization, team, membership and invitation, and the role lookups over them."""

    new_id: Callable[[], str]
    organizations: dict[str, Organization] = attrs.field(factory=dict)
    teams: dict[str, Team] = attrs.field(factory=dict)
    # (organization_id, principal_id) -> org membership; team memberships live apart.
    memberships: dict[tuple[str, str], Membership] = attrs.field(factory=dict)
    team_memberships: dict[tuple[str, str], Membership] = attrs.field(factory=dict)
    invitations: dict[str, Invitation] = attrs.field(factory=dict)
    # principal_id -> org id -> membership: what `orgs_of` reads on every request.
    _by_principal: dict[str, dict[str, Membership]] = attrs.field(factory=dict)

    def reindex(self) -> None:
        """Rebuild the per-principal index after memberships were loaded wholesale."""
        self._by_principal = {}
        for (org_id, principal_id), membership in self.memberships.items():
            self._by_principal.setdefault(principal_id, {})[org_id] = membership

    # Reads -------------------------------------------------------------------------------

    def role_in(self, principal_id: str, organization_id: str) -> Role | None:
        membership = self.memberships.get((organization_id, principal_id))
        return membership.role if membership is not None and membership.active else None

    def visible_org(self, principal_id: str, organization_id: str) -> Organization:
        """The org, or NotFound when it does not exist or the principal is no member of it."""
        org = self.organizations.get(organization_id)
        if org is None or self.role_in(principal_id, organization_id) is None:
            raise NotFound(f"organization {organization_id} not found")
        return org

    def require(self, principal_id: str, organization_id: str, action: Action) -> Role:
        """The principal's role when it allows `action`; 404 if not a member, 403 if too low."""
        self.visible_org(principal_id, organization_id)
        role = self.role_in(principal_id, organization_id)
        assert role is not None
        if not role.at_least(action.minimum):
            raise Forbidden(
                f"Insufficient permissions: {action.value} needs role "
                f"{action.minimum.value} or above"
            )
        return role

    def orgs_of(self, principal_id: str) -> list[tuple[Organization, Role]]:
        return [
            (self.organizations[org_id], membership.role)
            for org_id, membership in self._by_principal.get(principal_id, {}).items()
            if membership.active
        ]

    def teams_of(self, principal_id: str) -> list[tuple[Team, Role]]:
        return [
            (self.teams[team_id], membership.role)
            for (team_id, member), membership in self.team_memberships.items()
            if member == principal_id
        ]

    def org_teams(self, organization_id: str) -> list[Team]:
        return [team for team in self.teams.values() if team.organization_id == organization_id]

    def org_members(self, organization_id: str) -> list[Membership]:
        return [m for (org, _), m in self.memberships.items() if org == organization_id]

    def team(self, principal_id: str, team_id: str) -> Team:
        team = self.teams.get(team_id)
        if team is None or self.role_in(principal_id, team.organization_id) is None:
            raise NotFound(f"team {team_id} not found")
        return team

    def invitation(self, invitation_id: str) -> Invitation:
        invitation = self.invitations.get(invitation_id)
        if invitation is None:
            raise NotFound(f"invitation {invitation_id} not found")
        return invitation

    # Mutations ---------------------------------------------------------------------------

    def add_organization(
        self, slug: str, name: str, now: float, *, org_id: str | None = None
    ) -> Organization:
        if not SLUG.fullmatch(slug):
            raise ValidationFailed("slug must match ^[a-z0-9][a-z0-9-]{1,62}$")
        if not name.strip():
            raise ValidationFailed("name must not be empty")
        if any(org.slug == slug for org in self.organizations.values()):
            raise Conflict(f"organization slug {slug!r} is taken")
        if org_id is not None and org_id in self.organizations:
            raise Conflict(f"organization {org_id} exists")
        org = Organization(org_id or self.new_id(), slug, name, now, now)
        self.organizations[org.id] = org
        return org

    def create_organization(
        self, principal_id: str, slug: str, name: str, now: float
    ) -> Organization:
        org = self.add_organization(slug, name, now)
        self.grant(principal_id, org.id, Role.OWNER, now)
        return org

    def grant(self, principal_id: str, organization_id: str, role: Role, now: float) -> Membership:
        """Give (or raise to) an org role; a lower role never replaces a higher one."""
        if organization_id not in self.organizations:
            raise NotFound(f"organization {organization_id} not found")
        key = (organization_id, principal_id)
        current = self.memberships.get(key)
        if current is not None:
            if role.at_least(current.role):
                current.role = role
            return current
        membership = Membership(self.new_id(), principal_id, organization_id, role, now)
        self.memberships[key] = membership
        self._by_principal.setdefault(principal_id, {})[organization_id] = membership
        return membership

    def create_team(
        self, principal_id: str, organization_id: str, slug: str, name: str, now: float
    ) -> Team:
        self.require(principal_id, organization_id, Action.ADMIN)
        if not SLUG.fullmatch(slug):
            raise ValidationFailed("slug must match ^[a-z0-9][a-z0-9-]{1,62}$")
        if not name.strip():
            raise ValidationFailed("name must not be empty")
        team = self.add_team(organization_id, slug, name, now)
        self.join_team(principal_id, team, Role.ADMIN, now)
        return team

    def add_team(
        self, organization_id: str, slug: str, name: str, now: float, *, team_id: str | None = None
    ) -> Team:
        if any(t.slug == slug for t in self.org_teams(organization_id)):
            raise Conflict(f"team slug {slug!r} is taken in this organization")
        team = Team(team_id or self.new_id(), organization_id, slug, name, now)
        self.teams[team.id] = team
        return team

    def join_team(self, principal_id: str, team: Team, role: Role, now: float) -> None:
        key = (team.id, principal_id)
        if key not in self.team_memberships:
            self.team_memberships[key] = Membership(
                self.new_id(), principal_id, team.organization_id, role, now, team_id=team.id
            )

    def create_invitation(
        self,
        principal_id: str,
        organization_id: str,
        email: str,
        role: Role,
        team_id: str | None,
        now: float,
    ) -> Invitation:
        inviter = self.require(principal_id, organization_id, Action.ADMIN)
        if role is Role.OWNER and inviter is not Role.OWNER:
            raise Forbidden("Insufficient permissions: only an owner may invite an owner")
        if "@" not in email:
            raise ValidationFailed("email must contain @")
        if team_id is not None:
            team = self.teams.get(team_id)
            if team is None or team.organization_id != organization_id:
                raise ValidationFailed(f"team {team_id} is not in organization {organization_id}")
        for other in self.invitations.values():
            if (
                other.organization_id == organization_id
                and other.email.lower() == email.lower()
                and other.status is InvitationStatus.PENDING
                and other.expires_at > now
            ):
                raise Conflict(f"a pending invitation for {email} exists")
        invitation = Invitation(
            self.new_id(),
            organization_id,
            email,
            role,
            team_id,
            principal_id,
            now,
            now + INVITATION_LIFETIME,
        )
        self.invitations[invitation.id] = invitation
        return invitation

    def _expire_if_due(self, invitation: Invitation, now: float) -> None:
        if invitation.status is InvitationStatus.PENDING and invitation.expires_at <= now:
            apply_invitation(invitation, InvitationEvent.EXPIRE)

    def accept_invitation(self, principal_id: str, invitation_id: str, now: float) -> Invitation:
        """Any authenticated principal may accept (dev mode: principals have no verified email)."""
        invitation = self.invitation(invitation_id)
        self._expire_if_due(invitation, now)
        apply_invitation(invitation, InvitationEvent.ACCEPT)
        invitation.accepted_by = principal_id
        invitation.accepted_at = now
        self.grant(principal_id, invitation.organization_id, invitation.role, now)
        if invitation.team_id is not None:
            self.join_team(principal_id, self.teams[invitation.team_id], invitation.role, now)
        return invitation

    def revoke_invitation(self, principal_id: str, invitation_id: str, now: float) -> Invitation:
        invitation = self.invitation(invitation_id)
        self.require(principal_id, invitation.organization_id, Action.ADMIN)
        self._expire_if_due(invitation, now)
        apply_invitation(invitation, InvitationEvent.REVOKE)
        return invitation
