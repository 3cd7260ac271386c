"""The REST surface over real HTTP: the source's five examples as golden tests at both prefixes,
the OIDC endpoints, refusals (401/403/governance), control routes and the event stream."""

from __future__ import annotations

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


def auth(bearer: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer}"}


PROVISION = {
    "tenantId": "connectsoft",
    "projectId": "proj-booking-saas",
    "name": "booking-prod-weu",
    "stage": "prod",
    "region": "westeurope",
    "isolationModel": "silo",
    "computeTargets": ["aks", "container-apps", "functions", "app-service"],
}
DEPLOY = {
    "tenantId": "connectsoft",
    "environmentId": "env-9f1c2b7d",
    "releaseRef": "release-2026.6.11",
    "components": [
        {
            "moduleId": "module-reservations-api",
            "image": "acr.azurecr.io/reservations-api:1.4.2",
            "target": "aks",
        },
        {
            "moduleId": "module-billing-worker",
            "image": "acr.azurecr.io/billing-worker:1.4.2",
            "target": "container-apps",
        },
    ],
    "configurationId": "cfg-3a6e1d40",
    "strategy": "RollingHealthGated",
}
SCALE = {
    "tenantId": "connectsoft",
    "environmentId": "env-9f1c2b7d",
    "serviceId": "module-reservations-api",
    "target": "aks",
    "metric": "cpu",
    "minReplicas": 2,
    "maxReplicas": 20,
    "targetUtilizationPercent": 65,
    "scaleToZero": False,
}


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_provision_an_environment(start_emulator: Any, prefix: str) -> None:
    running = await start(start_emulator, environments=[], drift_rules=[])
    async with running.client(service="connectsoft") as client:
        response = await client.post(
            f"{prefix}/environments", json=PROVISION, headers=auth(await token(client))
        )
    assert response.status_code == 202
    assert response.headers["cs-schema-version"] == "1.0"
    assert response.json() == {
        "environmentId": "env-9f1c2b7d",
        "status": "Provisioning",
        "traceId": "trace-9f1c2b7d",
        "pulumiStackRef": "booking-prod-weu",
    }


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_deploy_generated_workloads(start_emulator: Any, prefix: str) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        headers = auth(await token(client))
        published = await client.post(
            f"{prefix}/configurations",
            json={
                "tenantId": "connectsoft",
                "environmentId": "env-9f1c2b7d",
                "name": "reservations",
                "settings": {"featureFlags": "on"},
            },
            headers=headers,
        )
        assert published.status_code == 201
        assert published.json()["configurationId"] == "cfg-3a6e1d40"
        response = await client.post(f"{prefix}/deployments", json=DEPLOY, headers=headers)
    assert response.status_code == 202
    assert response.headers["cs-schema-version"] == "1.0"
    assert response.json() == {
        "deploymentId": "dep-3a6e1d40",
        "status": "InProgress",
        "traceId": "trace-9f1c2b7d",
    }


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_get_service_health(start_emulator: Any, prefix: str) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        response = await client.get(
            f"{prefix}/services/module-reservations-api/health",
            headers=auth(await token(client)),
        )
    assert response.status_code == 200
    assert response.headers["cs-schema-version"] == "1.0"
    assert response.json() == {
        "serviceId": "module-reservations-api",
        "environmentId": "env-9f1c2b7d",
        "status": "Healthy",
        "checks": [
            {"name": "self", "status": "Healthy"},
            {"name": "sql", "status": "Healthy", "durationMs": 12},
            {"name": "service-bus", "status": "Healthy", "durationMs": 8},
        ],
        "evaluatedAt": "2026-06-11T18:00:00Z",
    }


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_apply_a_scaling_policy(start_emulator: Any, prefix: str) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        response = await client.post(
            f"{prefix}/scaling-policies", json=SCALE, headers=auth(await token(client))
        )
    assert response.status_code == 201
    assert response.headers["cs-schema-version"] == "1.0"
    assert response.json() == {
        "scalingPolicyId": "scl-7c12",
        "status": "Applied",
        "traceId": "trace-9f1c2b7d",
    }


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_list_drift_findings(start_emulator: Any, prefix: str) -> None:
    running = await start(start_emulator)
    running.emulator.clock.advance(300)
    async with running.client(service="connectsoft") as client:
        injected = await client.post(
            "/_emulate/connectsoft/faults/drift", json={"ruleId": "image-lag"}
        )
        assert injected.status_code == 200, injected.text
        response = await client.get(
            f"{prefix}/drift/env-9f1c2b7d", headers=auth(await token(client))
        )
    assert response.status_code == 200
    assert response.headers["cs-schema-version"] == "1.0"
    assert response.json() == {
        "environmentId": "env-9f1c2b7d",
        "findings": [
            {
                "findingId": "drift-1a2b",
                "serviceId": "module-reservations-api",
                "kind": "ImageVersionMismatch",
                "desired": "1.4.2",
                "actual": "1.4.1",
                "severity": "High",
                "detectedAt": "2026-06-11T18:05:00Z",
            }
        ],
    }
