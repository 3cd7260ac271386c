"""The inspector: `GET /_emulate/fabric/overview` and the page at `GET /_emulate/` that reads
it (served through `FabricInstance.inspector_page`).

Owns both. Like every `/_emulate` route the overview needs no credentials, so it carries no
secret: API keys appear by id, name, prefix (public in Fabric's own key listing), scopes and
status (never the key or its hash), and the JWT secret nowhere. The page is one
self-contained HTML file (no external assets) that writes what it reads as text, never as
HTML.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from ...web.inspector import compose_page
from . import serialize
from .envelope import Answer, Call
from .routes import FabricApi, Route, drain

# How many of the most recent jobs, runs, events and audit entries the overview lists.
RECENT = 50
T = TypeVar("T")


def inspector_page() -> bytes:
    """Fabric's inspector page: the platform's frame with templates/inspector-body.html and
    templates/inspector.js."""
    return compose_page("Fabric inspector", "emulator.fabric")


def _newest(items: Iterable[T], count: int = RECENT) -> list[T]:
    """The last `count` of `items`, newest first."""
    kept = list(items)[-count:]
    kept.reverse()
    return kept


def routes(api: FabricApi) -> list[Route]:
    plane = api.plane

    async def overview(call: Call) -> Answer:
        await drain(call)
        members: dict[str, int] = {}
        for organization_id, _ in plane.tenancy.memberships:
            members[organization_id] = members.get(organization_id, 0) + 1
        keys = [
            {
                "id": key.id,
                "name": key.name,
                "prefix": key.prefix,
                "organization_id": key.organization_id,
                "scopes": list(key.scopes),
                "status": key.status.value,
                "last_used_at": serialize.api_key(key)["last_used_at"],
            }
            for key in plane.keys.by_id.values()
        ]
        return Answer(
            200,
            {
                "organizations": [
                    {**serialize.organization(org), "members": members.get(org.id, 0)}
                    for org in plane.tenancy.organizations.values()
                ],
                "api_keys": keys,
                "providers": plane.catalog.capabilities(),
                "jobs": [serialize.job(job) for job in _newest(plane.jobs.values())],
                "runs": [serialize.run(run) for run in _newest(plane.runs.values())],
                "events": [serialize.event(event) for event in _newest(plane.events)],
                "audit": [serialize.audit_entry(entry) for entry in _newest(plane.audit.entries)],
            },
        )

    return [
        Route(
            "GET",
            "/_emulate/fabric/overview",
            overview,
            public=True,
            summary="The inspector's view: orgs, key metadata, providers, recent jobs, runs, "
            "events and audit entries (no secret)",
        )
    ]
