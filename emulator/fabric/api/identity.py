"""`/v1/me*`: the current principal, its organizations, teams and effective permissions.

Imports the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from ..core.auth import AuthMethod
from . import serialize
from .envelope import Answer, Call
from .routes import ANY_KEY, FabricApi, Route, drain


def routes(api: FabricApi) -> list[Route]:
    plane = api.plane

    async def me(call: Call) -> Answer:
        await drain(call)
        caller = call.principal()
        return Answer(
            200,
            {
                "principal_id": caller.principal_id,
                "authenticated": True,
                "email": None,
                "display_name": None,
                "auth_method": caller.method.value,
                "api_key_id": None if caller.api_key is None else caller.api_key.id,
                "organization_id": caller.key_org,
                "scopes": None if caller.api_key is None else list(caller.api_key.scopes),
                "dev_header": caller.method is AuthMethod.DEV_HEADER,
            },
        )

    async def my_orgs(call: Call) -> Answer:
        await drain(call)
        return Answer(
            200,
            [
                {**serialize.organization(org), "role": role.value}
                for org, role in plane.my_orgs(call.principal())
            ],
        )

    async def my_teams(call: Call) -> Answer:
        await drain(call)
        return Answer(
            200,
            [
                {**serialize.team(team), "role": role.value}
                for team, role in plane.my_teams(call.principal())
            ],
        )

    async def my_permissions(call: Call) -> Answer:
        await drain(call)
        return Answer(
            200,
            [
                {"organization_id": org, "team_id": team, "role": role.value, "actions": actions}
                for org, team, role, actions in plane.my_permissions(call.principal())
            ],
        )

    return [
        Route("GET", "/v1/me", me, ANY_KEY, summary="Current principal"),
        Route("GET", "/v1/me/organizations", my_orgs, ANY_KEY, summary="My organizations"),
        Route("GET", "/v1/me/teams", my_teams, ANY_KEY, summary="My teams"),
        Route(
            "GET", "/v1/me/permissions", my_permissions, ANY_KEY, summary="Effective permissions"
        ),
    ]
