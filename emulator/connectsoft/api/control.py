"""ConnectSoft's control routes under `/_emulate/connectsoft`: faults, approvals, the event stream.

Owns the routes users' tests drive the emulator with instead of sleeping: arm a provisioning or
health-gate failure, report a service (or one check) Unhealthy and heal it, inject drift (by
hand or by a seeded rule) and clear it, list approvals and grant or reject one, and
`GET /_emulate/connectsoft/events`, the event log as server-sent events through the shared
writer (emulator.web.sse): `id:` is the event's sequence number, so `Last-Event-ID` (or
`?lastEventId=`) resumes from the log; a reader whose position retention already dropped gets a
`gap` event first; a reader that falls behind the live feed is ended and resumes the same way.
Like the emulator's other `/_emulate` routes these take no token.
Imports quart, the engine and the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from quart import Blueprint, Response

from ...web.http import json_response, parse_json, read_body
from ...web.rawasgi import RawRequest, RawRoute
from ...web.sse import ServerSentEvent, last_event_id, parse_last_event_id, stream_events
from ..core.errors import InvalidArgument
from ..engine import sse_event
from . import serializers
from .errors import PROBLEMS, SCHEMA_HEADER, SCHEMA_VERSION

if TYPE_CHECKING:
    from ..instance import ConnectSoftInstance

PREFIX = "/_emulate/connectsoft"
EVENTS_PATH = f"{PREFIX}/events"
MAX_CONTROL_BODY = 16 * 1024


def control_blueprint(instance: ConnectSoftInstance) -> Blueprint:
    blueprint = Blueprint("connectsoft_control", __name__, url_prefix=PREFIX)
    settings = instance.context.settings

    async def body() -> dict[str, Any]:
        data = await read_body(PROBLEMS, MAX_CONTROL_BODY, settings.body_timeout)
        parsed = {} if not data.strip() else parse_json(data, PROBLEMS, "InvalidRequest")
        if not isinstance(parsed, dict):
            raise InvalidArgument("InvalidRequest", "The request body must be a JSON object.")
        return parsed

    @blueprint.post("/faults/fail-next-provisioning")
    async def fail_next_provisioning() -> Response:
        """The next N environment provisionings end Failed (count, default 1)."""
        count = _count(await body())
        engine = instance.engine
        engine.call(lambda now: engine.state.arm_provisioning_failure(count))
        return json_response({"failNextProvisioning": count})

    @blueprint.post("/faults/fail-next-health-gate")
    async def fail_next_health_gate() -> Response:
        """The next N deployment health gates fail, so those deployments roll back."""
        count = _count(await body())
        engine = instance.engine
        engine.call(lambda now: engine.state.arm_health_gate_failure(count))
        return json_response({"failNextHealthGate": count})

    @blueprint.post("/faults/unhealthy")
    async def unhealthy() -> Response:
        """Report a service (or one check, default `self`) Unhealthy; `unhealthy: false` heals."""
        data = await body()
        env_id, service_id = _text(data, "environmentId"), _text(data, "serviceId")
        check = data.get("check")
        if check is not None and not isinstance(check, str):
            raise InvalidArgument("InvalidRequest", "check must be a string.")
        flag = data.get("unhealthy", True)
        if not isinstance(flag, bool):
            raise InvalidArgument("InvalidRequest", "unhealthy must be true or false.")
        engine = instance.engine
        service = engine.call(
            lambda now: engine.state.set_unhealthy(env_id, service_id, check, flag, now)
        )
        return json_response(serializers.health(service))

    @blueprint.post("/faults/drift")
    async def inject_drift() -> Response:
        """Make what runs differ from what was deployed: `ruleId` of a seeded drift rule, or
        `environmentId`, `serviceId`, `kind`, `actual` and optionally `severity`."""
        data = await body()
        engine = instance.engine
        if "ruleId" in data:
            rule_id = _text(data, "ruleId")
            service = engine.call(lambda now: engine.state.apply_drift_rule(rule_id, now))
        else:
            env_id, service_id = _text(data, "environmentId"), _text(data, "serviceId")
            kind, actual = _text(data, "kind"), _text(data, "actual")
            severity = data.get("severity")
            if severity not in (None, "Low", "Medium", "High", "Critical"):
                raise InvalidArgument(
                    "InvalidRequest", "severity must be Low, Medium, High or Critical."
                )
            service = engine.call(
                lambda now: engine.state.inject_drift(
                    env_id, service_id, kind, actual, severity, now
                )
            )
        env = engine.state.environments[service.environment_id]
        return json_response(serializers.drift(env, list(service.findings.values())))

    @blueprint.post("/faults/drift/clear")
    async def clear_drift() -> Response:
        """What runs is what was deployed again (the service's findings resolve)."""
        data = await body()
        env_id, service_id = _text(data, "environmentId"), _text(data, "serviceId")
        engine = instance.engine
        service = engine.call(lambda now: engine.state.clear_drift(env_id, service_id, now))
        env = engine.state.environments[service.environment_id]
        return json_response(serializers.drift(env, list(service.findings.values())))

    @blueprint.get("/approvals")
    async def approvals() -> Response:
        """Every governance approval asked for, oldest first."""
        items = [serializers.approval(a) for a in instance.engine.state.approvals.values()]
        return json_response({"approvals": items})

    @blueprint.post("/approvals/<approval_id>/grant")
    async def grant(approval_id: str) -> Response:
        """Grant a pending approval: the next identical change goes through (once)."""
        engine = instance.engine
        record = engine.call(lambda now: engine.state.grant_approval(approval_id, now))
        return json_response(serializers.approval(record))

    @blueprint.post("/approvals/<approval_id>/reject")
    async def reject(approval_id: str) -> Response:
        """Reject a pending approval: the next identical change is denied (403)."""
        engine = instance.engine
        record = engine.call(lambda now: engine.state.reject_approval(approval_id, now))
        return json_response(serializers.approval(record))

    return blueprint


def _count(data: dict[str, Any]) -> int:
    count = data.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1000:
        raise InvalidArgument("InvalidRequest", "count must be an integer from 0 to 1000.")
    return count


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument("InvalidRequest", f"{key} is required.", {"field": key})
    return value


# The event stream (a raw route: it streams and watches for the client leaving) ----------------


def event_routes(instance: ConnectSoftInstance) -> list[RawRoute]:
    async def events(raw: RawRequest) -> None:
        last = last_event_id(raw)
        if last is None:
            query = parse_qs(bytes(raw.scope.get("query_string") or b"").decode("latin-1"))
            given = query.get("lastEventId")
            last = parse_last_event_id(given[0] if given else None)
        engine = instance.engine
        # Subscribing and reading the log happen with no checkpoint between them, so every
        # event is either replayed or live, never both and never neither.
        with engine.feed.subscribe() as subscription:
            resume = engine.state.events.resume(last)
            first = [sse_event(event) for event in resume.events]
            if resume.gap:
                gap = ServerSentEvent(data='{"missedEvents":true}', event="gap")
                first.insert(0, gap)
            await stream_events(
                raw,
                subscription,
                first=first,
                headers=[(SCHEMA_HEADER.encode(), SCHEMA_VERSION.encode())],
            )

    return [RawRoute("GET", EVENTS_PATH, events, "The event log as server-sent events.")]
