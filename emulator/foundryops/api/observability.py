"""`GET /metrics` (Prometheus text format) and the service's control routes under
`/_emulate/foundryops/` (the audit trail, the decision log, callback deliveries).

Owns these handlers. None needs an API key (local tooling reads them) and none shows a secret:
audit events name keys by id only.
"""

from __future__ import annotations

from collections.abc import Callable

from ...web.rawasgi import RawRequest, RawRoute
from .common import Call, Ops, Reply, route
from .metrics import CONTENT_TYPE


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
    ]  # fmt: skip
