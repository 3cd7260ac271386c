"""The REST surface over real HTTP: the source's five examples as golden tests at both prefixes,
the OIDC endpoints, refusals (401/403/governance), control routes and the event stream."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from conftest import T0, seed_data

from emulator.connectsoft.core.records import SequentialIds
from emulator.platform.clock import ManualClock

PREFIXES = ["/runtime", "/v1/runtime"]
ZERO = {
    name: 0
    for name in (
        "environment_provisioning",
        "deployment_requested",
        "deployment_provisioning",
        "deployment_configuring",
        "deployment_rolling_out",
        "deployment_health_gating",
        "deployment_promoting",
        "deployment_rolling_back",
    )
}


class ScriptedIds(SequentialIds):
    """The ids of the source's examples first, sequential ones after."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__()
        self.script = script

    def new(self, prefix: str) -> str:
        queue = self.script.get(prefix)
        if queue:
            return prefix + queue.pop(0)
        return super().new(prefix)


async def start(start_emulator: Any, **overrides: Any) -> Any:
    running = await start_emulator({"connectsoft": seed_data(**overrides)}, clock=ManualClock(T0))
    instance = running.emulator.services["connectsoft"]
    instance.state.ids = ScriptedIds(
        {
            "env-": ["9f1c2b7d"],
            "dep-": ["3a6e1d40"],
            "cfg-": ["3a6e1d40"],
            "scl-": ["7c12"],
            "drift-": ["1a2b"],
        }
    )
    return running


async def token(client: httpx.AsyncClient, **form: str) -> str:
    data = {"grant_type": "client_credentials", **form}
    response = await client.post(
        "/connect/token", data=data, auth=("portal", "portal-secret-value")
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def test_smoke(start_emulator: Any) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        bearer = await token(client)
        response = await client.get(
            "/runtime/environments/env-9f1c2b7d", headers={"Authorization": f"Bearer {bearer}"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["cs-schema-version"] == "1.0"
