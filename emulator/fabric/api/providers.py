"""Providers: list with capabilities and health, execute, execute with SSE token streaming,
and cost estimates.

`execute/stream` answers `event: token` frames (`{"index", "delta"}`) and one `event: done`
frame carrying what `execute` returns; a provider failure after the stream started ends it
with an `event: error` frame (`{"code": "provider_error", "message"}`).
Imports trio, the Fabric core and the API plumbing; nothing from quart or yaml.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import FabricError, ValidationFailed
from ..core.providers import STREAMABLE
from .envelope import Answer, Call, encode
from .routes import ANY_KEY, FabricApi, Route, drain, read_json
from .streams import sse_frame, start_sse


def routes(api: FabricApi) -> list[Route]:
    plane, runner = api.plane, api.engine.executor.provider

    async def list_providers(call: Call) -> Answer:
        await drain(call)
        return Answer(200, plane.catalog.capabilities())

    async def execute(call: Call) -> Answer:
        body = await read_json(call)
        caller = call.principal()
        plan, org = plane.plan_provider_call(caller, body)
        call.name_org(org)
        await runner.call(plan)
        plane.record_usage(
            plan,
            organization_id=org,
            principal_id=caller.principal_id,
            api_key_id=None if caller.api_key is None else caller.api_key.id,
        )
        return Answer(200, plan.answer())

    async def execute_stream(call: Call) -> None:
        body = await read_json(call)
        caller = call.principal()
        plan, org = plane.plan_provider_call(caller, body)
        if plan.modality not in STREAMABLE:
            raise ValidationFailed(f"modality {plan.modality} cannot be streamed (text only)")
        call.name_org(org)
        await start_sse(call)

        async def token(index: int, delta: str) -> None:
            data = encode({"index": index, "delta": delta})
            await call.raw.send_body(sse_frame("token", data), more=True)

        try:
            await runner.stream(plan, token)
        except FabricError as error:
            failure: dict[str, Any] = {"code": error.code, "message": error.message}
            await call.raw.send_body(sse_frame("error", encode(failure)), more=False)
            return
        plane.record_usage(
            plan,
            organization_id=org,
            principal_id=caller.principal_id,
            api_key_id=None if caller.api_key is None else caller.api_key.id,
        )
        await call.raw.send_body(sse_frame("done", encode(plan.answer())), more=False)

    async def estimate(call: Call) -> Answer:
        body = await read_json(call)
        plan, org = plane.plan_provider_call(call.principal(), body, estimate=True)
        call.name_org(org)
        return Answer(
            200,
            {
                "provider_id": plan.provider_id,
                "model": plan.model,
                "modality": plan.modality,
                "tier": plan.tier,
                "estimated_input_tokens": plan.input_tokens,
                "estimated_output_tokens": plan.output_tokens,
                "estimated_cost_usd": plan.cost_usd,
            },
        )

    return [
        Route("GET", "/v1/providers", list_providers, ANY_KEY, summary="List providers"),
        Route(
            "POST",
            "/v1/providers/execute",
            execute,
            "providers:execute",
            summary="Execute a provider request",
        ),
        Route(
            "POST",
            "/v1/providers/execute/stream",
            execute_stream,
            "providers:execute",
            summary="Execute with SSE token streaming",
        ),
        Route(
            "POST",
            "/v1/providers/estimate",
            estimate,
            "providers:execute",
            summary="Cost estimation",
        ),
    ]
