"""The admin identity routes: who the bearer token stands for, and the enrollment.

Owns `GET /api/v2/admin/users/getCurrent` and `GET /api/v2/admin/enrollments/getCurrent`
(scope `api:admin-read`; 403s carry the errorNames foundry-platform-sdk declares, so it raises
its typed exceptions) and `GET /multipass/api/me` (any valid bearer token; exactly `id`,
`username` and `attributes`, because foundry-dev-tools' `User.me()` passes the keys on as
keyword arguments and breaks on any other). Serializers sit beside the routes.

The two current-user routes are raw ASGI routes (`admin_routes`, emulator.web.rawasgi): they are
called on every SDK start and by load tests, and Quart's per-request cost dominated them.

Imports quart and the core; nothing from hypercorn or yaml.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response

from ...web.http import json_response
from ...web.rawasgi import RawRequest, RawRoute, with_automatic_methods
from ..core.principals import Principal
from ..seed import EnrollmentSeed
from .errors import FOUNDRY_API, OAUTH

if TYPE_CHECKING:
    from ..state import FoundryState

ADMIN_READ = "api:admin-read"


def attributes_to_json(principal: Principal) -> dict[str, list[str]]:
    """The seed's attributes plus Multipass's reserved `multipass:*` ones, which win over a
    seed attribute of the same name so they always agree with the user's fields."""
    attributes = {key: list(values) for key, values in principal.attributes.items()}
    attributes["multipass:realm"] = [principal.realm]
    reserved = (
        ("multipass:givenName", principal.given_name),
        ("multipass:familyName", principal.family_name),
        ("multipass:email:primary", principal.email),
        ("multipass:organization-rid", principal.organization_rid),
    )
    for key, value in reserved:
        if value:
            attributes[key] = [value]
    return attributes


def user_to_json(principal: Principal) -> dict[str, Any]:
    """foundry_sdk's `User`: optional fields are left out rather than sent as null (a service
    principal has no organization, and an empty string would fail the SDK's RID check)."""
    body: dict[str, Any] = {"id": principal.id, "username": principal.username}
    optional = (
        ("givenName", principal.given_name),
        ("familyName", principal.family_name),
        ("email", principal.email),
    )
    body.update((key, value) for key, value in optional if value)
    body["realm"] = principal.realm
    if principal.organization_rid:
        body["organization"] = principal.organization_rid
    body["status"] = "ACTIVE" if principal.active else "DELETED"
    body["attributes"] = attributes_to_json(principal)
    return body


def me_to_json(principal: Principal) -> dict[str, Any]:
    return {
        "id": principal.id,
        "username": principal.username,
        "attributes": attributes_to_json(principal),
    }


def iso_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def enrollment_to_json(enrollment: EnrollmentSeed, started_at: float) -> dict[str, Any]:
    return {
        "rid": enrollment.rid,
        "name": enrollment.name,
        "createdTime": enrollment.created_time or iso_time(started_at),
    }


def admin_routes(state: FoundryState) -> list[RawRoute]:
    """getCurrent and /multipass/api/me as raw routes (with HEAD and OPTIONS, as Quart had)."""

    async def get_current_user(raw: RawRequest) -> None:
        # `state.auth` is looked up per request: reset() replaces it.
        caller = state.auth.require_raw(
            raw, FOUNDRY_API, scope=ADMIN_READ, denied="GetCurrentUserPermissionDenied"
        )
        await raw.respond_json(200, user_to_json(caller.principal))

    async def multipass_me(raw: RawRequest) -> None:
        caller = state.auth.require_raw(raw, OAUTH)
        await raw.respond_json(200, me_to_json(caller.principal))

    return with_automatic_methods(
        [
            RawRoute(
                "GET",
                "/api/v2/admin/users/getCurrent",
                get_current_user,
                "The user (or service principal) the bearer token stands for.",
            ),
            RawRoute(
                "GET",
                "/multipass/api/me",
                multipass_me,
                "foundry-dev-tools' current-user call: exactly id, username and attributes.",
            ),
        ]
    )


def admin_blueprint(state: FoundryState) -> Blueprint:
    blueprint = Blueprint("admin", __name__)
    # The enrollment's createdTime when the seed gives none: when the emulator was built.
    started_at = state.context.clock.now()

    @blueprint.get("/api/v2/admin/enrollments/getCurrent")
    async def get_current_enrollment() -> Response:
        """The enrollment of the current user's organization (the emulator has one)."""
        state.auth.require(
            FOUNDRY_API, scope=ADMIN_READ, denied="GetCurrentEnrollmentPermissionDenied"
        )
        return json_response(enrollment_to_json(state.seed.enrollment, started_at))

    return blueprint
