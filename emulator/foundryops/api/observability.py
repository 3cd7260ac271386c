"""`GET /metrics` (Prometheus text format), the service's control routes under
`/_emulate/foundryops/` (the audit trail, the decision log, callback deliveries, the jobs, the
credit accounts) and the inspector page they feed (`GET /_emulate/`, through
`FoundryOpsInstance.inspector_page`).

Owns these handlers and the page. None needs an API key (local tooling reads them) and none
shows a secret: audit events, jobs and accounts name keys by id only. The page is one
self-contained HTML file (no external assets) that renders the JSON as text, never as HTML.
"""

from __future__ import annotations

from collections.abc import Callable

from ...web.inspector import compose_page
from ...web.rawasgi import RawRequest, RawRoute
from ..engine import job_json
from .common import Call, Ops, Reply, route
from .metrics import CONTENT_TYPE

# The most recent jobs `/_emulate/foundryops/jobs` lists (every kept job stays readable at
# `GET /api/v2/jobs/{job_id}`).
RECENT_JOBS = 200


def inspector_page() -> bytes:
    """FoundryOps' inspector page (served at `GET /_emulate/` through the contract's hook): the
    platform's frame with templates/inspector-body.html and templates/inspector.js."""
    return compose_page("FoundryOps inspector", "emulator.foundryops")


async def metrics(call: Call) -> Reply:
    body = call.ops.metrics.exposition()

    async def stream(raw: RawRequest, headers: list[tuple[bytes, bytes]]) -> None:
        await raw.respond(200, body, [*headers, (b"content-type", CONTENT_TYPE.encode())])

    return Reply(200, stream=stream)


async def audit(call: Call) -> Reply:
    events = call.ops.state.audit.list(limit=1000)
    return Reply(200, {"events": [event.to_json() for event in events]})


async def decisions(call: Call) -> Reply:
    entries = list(call.ops.state.decisions.decisions)[-1000:]
    return Reply(200, {"decisions": [entry.to_json() for entry in entries]})


async def deliveries(call: Call) -> Reply:
    return Reply(
        200,
        {
            "deliveries": [
                {
                    "delivery_id": d.delivery_id,
                    "job_id": d.job_id,
                    "url": d.url,
                    "status": d.status.value,
                    "attempts": d.attempts,
                    "last_status_code": d.last_status_code,
                    "last_error": d.last_error,
                }
                for d in call.ops.state.deliveries.values()
            ]
        },
    )


async def jobs(call: Call) -> Reply:
    ops = call.ops
    now = ops.clock.now()
    kept = list(ops.state.jobs.jobs.values())[-RECENT_JOBS:]
    return Reply(
        200,
        {
            "jobs": [
                {**job_json(job, now), "key_id": job.key_id, "credits_charged": job.credits_charged}
                for job in reversed(kept)
            ]
        },
    )


async def credits(call: Call) -> Reply:
    accounts = call.ops.state.ledger.accounts.values()
    return Reply(
        200,
        {
            "accounts": [
                {"account_id": a.account_id, "mode": a.mode.value, "balance": a.balance}
                for a in sorted(accounts, key=lambda account: account.account_id)
            ]
        },
    )


def routes(ops_of: Callable[[], Ops], body_limit: int) -> list[RawRoute]:
    del body_limit
    base = "/_emulate/foundryops"
    return [
        route(ops_of, "GET", "/metrics", metrics, scope=None, auth=False,
              summary="Prometheus metrics"),
        route(ops_of, "GET", base + "/audit", audit, scope=None, auth=False,
              summary="The audit trail of every mutation"),
        route(ops_of, "GET", base + "/decisions", decisions, scope=None, auth=False,
              summary="The match decision log (kept 30 days)"),
        route(ops_of, "GET", base + "/deliveries", deliveries, scope=None, auth=False,
              summary="Callback deliveries and their attempts"),
        route(ops_of, "GET", base + "/jobs", jobs, scope=None, auth=False,
              summary="The most recent jobs, newest first, with progress"),
        route(ops_of, "GET", base + "/credits", credits, scope=None, auth=False,
              summary="Credit accounts: mode and balance"),
    ]  # fmt: skip
