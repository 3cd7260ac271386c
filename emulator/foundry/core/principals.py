"""Principals: the human users and service principals that tokens stand for.

Owns the directory of principals built from the seed, and the creation of service principals
for OAuth clients (client credentials). Never reuses a human as a service principal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ..seed import PrincipalType, UserSeed, stable_uuid
from .errors import Conflict


@attrs.define
class Principal:
    id: str
    username: str
    display_name: str
    email: str | None
    given_name: str | None
    family_name: str | None
    realm: str
    organization_rid: str | None
    principal_type: PrincipalType
    active: bool
    oauth_client_id: str | None
    attributes: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_seed(cls, seed: UserSeed) -> Principal:
        return cls(
            id=seed.id,
            username=seed.username,
            display_name=seed.display_name,
            email=seed.email,
            given_name=seed.given_name,
            family_name=seed.family_name,
            realm=seed.realm,
            organization_rid=seed.organization_rid,
            principal_type=seed.principal_type,
            active=seed.active,
            oauth_client_id=seed.oauth_client_id,
            attributes=dict(seed.attributes),
        )

    @property
    def is_human(self) -> bool:
        return self.principal_type is PrincipalType.HUMAN


@attrs.define
class Directory:
    """Every principal by username, in seed order."""

    principals: dict[str, Principal] = attrs.field(factory=dict)

    @classmethod
    def from_seed(cls, users: Iterable[UserSeed]) -> Directory:
        return cls({user.username: Principal.from_seed(user) for user in users})

    def get(self, username: str) -> Principal | None:
        return self.principals.get(username)

    def active_humans(self) -> list[Principal]:
        return [p for p in self.principals.values() if p.is_human and p.active]

    def service_principal(self, client_id: str, display_name: str) -> Principal:
        """The service principal for an OAuth client, created on first use.

        Raises Conflict when a human (or a service principal of another client) already has
        the client id as username: tokens for it would silently act as that other principal.
        """
        existing = self.principals.get(client_id)
        if existing is not None:
            if existing.is_human or (existing.oauth_client_id not in (None, client_id)):
                raise Conflict(
                    "principal_conflict",
                    f"The username '{client_id}' belongs to another principal, so client "
                    f"'{client_id}' cannot have a service principal of that name.",
                )
            if not existing.active:
                raise Conflict(
                    "principal_inactive", f"The service principal '{client_id}' is inactive."
                )
            return existing
        principal = Principal(
            id=stable_uuid("service", client_id),
            username=client_id,
            display_name=display_name,
            email=None,
            given_name=None,
            family_name=None,
            realm="palantir-internal-realm",
            organization_rid=None,
            principal_type=PrincipalType.SERVICE,
            active=True,
            oauth_client_id=client_id,
            attributes={},
        )
        self.principals[client_id] = principal
        return principal
