"""Organizations, teams, invitations and the authorization checks.

Imports the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from . import serialize
from .envelope import Answer, Call
from .routes import ANY_KEY, FabricApi, Route, drain, read_json


def routes(api: FabricApi) -> list[Route]:
    plane = api.plane

    async def create_org(call: Call) -> Answer:
        body = await read_json(call)
        org = plane.create_organization(call.principal(), body)
        call.name_org(org.id)
        return Answer(201, serialize.organization(org), {"self": f"/v1/organizations/{org.id}"})

    async def get_org(call: Call) -> Answer:
        await drain(call)
        org_id = call.raw.params["id"]
        call.name_org(org_id)
        return Answer(200, serialize.organization(plane.get_organization(call.principal(), org_id)))

    async def org_teams(call: Call) -> Answer:
        await drain(call)
        org_id = call.raw.params["id"]
        call.name_org(org_id)
        return Answer(200, [serialize.team(t) for t in plane.org_teams(call.principal(), org_id)])

    async def org_members(call: Call) -> Answer:
        await drain(call)
        org_id = call.raw.params["id"]
        call.name_org(org_id)
        members = plane.org_members(call.principal(), org_id)
        return Answer(200, [serialize.membership(m) for m in members])

    async def create_team(call: Call) -> Answer:
        body = await read_json(call)
        team = plane.create_team(call.principal(), body)
        call.name_org(team.organization_id)
        call.team_id = team.id
        return Answer(201, serialize.team(team), {"self": f"/v1/teams/{team.id}"})

    async def get_team(call: Call) -> Answer:
        await drain(call)
        team = plane.get_team(call.principal(), call.raw.params["id"])
        call.name_org(team.organization_id)
        call.team_id = team.id
        return Answer(200, serialize.team(team))

    async def create_invitation(call: Call) -> Answer:
        body = await read_json(call)
        invitation = plane.create_invitation(call.principal(), body)
        call.name_org(invitation.organization_id)
        return Answer(201, serialize.invitation(invitation))

    async def accept(call: Call) -> Answer:
        await drain(call)
        invitation = plane.accept_invitation(call.principal(), call.raw.params["id"])
        call.name_org(invitation.organization_id)
        return Answer(200, serialize.invitation(invitation))

    async def revoke(call: Call) -> Answer:
        await drain(call)
        invitation = plane.revoke_invitation(call.principal(), call.raw.params["id"])
        call.name_org(invitation.organization_id)
        return Answer(200, serialize.invitation(invitation))

    async def check(call: Call) -> Answer:
        body = await read_json(call)
        allowed, reason, _, _ = plane.check_permission(call.principal(), body)
        return Answer(200, {"allowed": allowed, "reason": reason})

    async def check_batch(call: Call) -> Answer:
        body = await read_json(call)
        results = plane.check_batch(call.principal(), body)
        return Answer(
            200,
            [
                {"allowed": allowed, "reason": reason, "action": action, "resource": resource}
                for allowed, reason, action, resource in results
            ],
        )

    return [
        Route("POST", "/v1/organizations", create_org, summary="Create organization"),
        Route("GET", "/v1/organizations/{id}", get_org, summary="Get organization"),
        Route("GET", "/v1/organizations/{id}/teams", org_teams, summary="List teams"),
        Route("GET", "/v1/organizations/{id}/members", org_members, summary="List members"),
        Route("POST", "/v1/teams", create_team, summary="Create team (RBAC enforced)"),
        Route("GET", "/v1/teams/{id}", get_team, summary="Get team"),
        Route("POST", "/v1/invitations", create_invitation, summary="Create invitation"),
        Route("POST", "/v1/invitations/{id}/accept", accept, summary="Accept invitation"),
        Route("POST", "/v1/invitations/{id}/revoke", revoke, summary="Revoke invitation"),
        Route("POST", "/v1/authz/check", check, ANY_KEY, summary="Single permission check"),
        Route("POST", "/v1/authz/check-batch", check_batch, ANY_KEY, summary="Batch check"),
    ]
