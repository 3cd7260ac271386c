"""The REST surface over real HTTP: the source's five examples as golden tests at both prefixes,
the OIDC endpoints, refusals (401/403/governance), control routes and the event stream."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from connectsoft_builders import T0, seed_data
from httpx_sse import aconnect_sse

from emulator.connectsoft.core.records import SequentialIds
from emulator.platform.clock import ManualClock

PREFIXES = ["/runtime", "/v1/runtime"]
# The emulator's own HTTP servers and the Hypercorn mode.
SERVERS = ["emulator", "hypercorn"]
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


async def start(start_emulator: Any, server: str = "emulator", **overrides: Any) -> Any:
    running = await start_emulator(
        {"connectsoft": seed_data(**overrides)}, clock=ManualClock(T0), http_server=server
    )
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


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_provision_an_environment(
    start_emulator: Any, prefix: str, server: str, http2: bool
) -> None:
    running = await start(start_emulator, server, environments=[], drift_rules=[])
    async with running.client(service="connectsoft", http2=http2) as client:
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


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_deploy_generated_workloads(
    start_emulator: Any, prefix: str, server: str, http2: bool
) -> None:
    running = await start(start_emulator, server)
    async with running.client(service="connectsoft", http2=http2) as client:
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


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_get_service_health(
    start_emulator: Any, prefix: str, server: str, http2: bool
) -> None:
    running = await start(start_emulator, server)
    async with running.client(service="connectsoft", http2=http2) as client:
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


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_apply_a_scaling_policy(
    start_emulator: Any, prefix: str, server: str, http2: bool
) -> None:
    running = await start(start_emulator, server)
    async with running.client(service="connectsoft", http2=http2) as client:
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


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("prefix", PREFIXES)
async def test_golden_list_drift_findings(
    start_emulator: Any, prefix: str, server: str, http2: bool
) -> None:
    running = await start(start_emulator, server)
    running.emulator.clock.advance(300)
    async with running.client(service="connectsoft", http2=http2) as client:
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


async def test_oidc_discovery_and_jwks(start_emulator: Any) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        discovery = (await client.get("/.well-known/openid-configuration")).json()
        base = running.url("connectsoft")
        assert discovery["issuer"] == base
        assert discovery["token_endpoint"] == f"{base}/connect/token"
        jwks = (await client.get(discovery["jwks_uri"])).json()
        assert [key["alg"] for key in jwks["keys"]] == ["ES256"]
        assert all("d" not in key for key in jwks["keys"])
        # Client credentials in the form work as well as HTTP Basic.
        response = await client.post(
            "/connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "portal",
                "client_secret": "portal-secret-value",
                "scope": "runtime.health.read",
                "tenant": "other",
            },
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.json()["scope"] == "runtime.health.read"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        (
            {"grant_type": "client_credentials", "client_id": "portal", "client_secret": "no"},
            401,
            "invalid_client",
        ),
        (
            {
                "grant_type": "password",
                "client_id": "portal",
                "client_secret": "portal-secret-value",
            },
            400,
            "unsupported_grant_type",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "portal",
                "client_secret": "portal-secret-value",
                "scope": "x",
            },
            400,
            "invalid_scope",
        ),
    ],
)
async def test_token_refusals(
    start_emulator: Any, form: dict[str, str], status: int, error: str
) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        response = await client.post("/connect/token", data=form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert "portal-secret-value" not in response.text
    assert response.headers["cs-schema-version"] == "1.0"


async def test_refusals_are_clear(start_emulator: Any) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        missing = await client.get("/runtime/drift/env-9f1c2b7d")
        assert missing.status_code == 401
        assert missing.json()["code"] == "Unauthenticated"
        assert "Bearer" in missing.headers["www-authenticate"]
        forged = await client.get(
            "/runtime/drift/env-9f1c2b7d", headers=auth((await token(client))[:-3] + "abc")
        )
        assert forged.status_code == 401
        assert forged.json()["code"] == "InvalidToken"
        narrow = await token(client, scope="runtime.health.read")
        scope = await client.get("/runtime/drift/env-9f1c2b7d", headers=auth(narrow))
        assert scope.status_code == 403
        assert scope.json()["code"] == "InsufficientScope"
        assert scope.json()["requiredScope"] == "runtime.drift.read"
        other = await token(client, tenant="other")
        tenant = await client.get("/runtime/environments/env-9f1c2b7d", headers=auth(other))
        assert tenant.status_code == 403
        assert tenant.json()["code"] == "TenantMismatch"
        assert set(tenant.json()) >= {"type", "title", "status", "detail", "code"}
        moved = await client.post(
            "/runtime/deployments", json={**DEPLOY, "tenantId": "other"}, headers=auth(other)
        )
        assert moved.status_code == 403
        bad = await client.post(
            "/runtime/deployments", content=b"{not json", headers=auth(await token(client))
        )
        assert bad.status_code == 400
        assert bad.headers["cs-schema-version"] == "1.0"
        nowhere = await client.get("/runtime/nowhere")
        assert nowhere.status_code == 404
        assert nowhere.headers["cs-schema-version"] == "1.0"
        assert nowhere.json()["code"] == "RouteNotFound"


async def test_governance_gate_and_approval(start_emulator: Any) -> None:
    running = await start(
        start_emulator,
        governance=[
            {
                "operation": "scaling.write",
                "decision": "deny",
                "reason": "Change freeze until Monday",
            },
            {"operation": "deployments.write", "decision": "require_approval"},
        ],
    )
    async with running.client(service="connectsoft") as client:
        headers = auth(await token(client))
        denied = await client.post("/runtime/scaling-policies", json=SCALE, headers=headers)
        assert denied.status_code == 403
        assert denied.json()["code"] == "GovernanceDenied"
        assert denied.json()["detail"] == "Change freeze until Monday"
        body = {**DEPLOY, "configurationId": None}
        pending = await client.post("/runtime/deployments", json=body, headers=headers)
        assert pending.status_code == 403
        approval_id = pending.json()["approvalId"]
        listed = (await client.get("/_emulate/connectsoft/approvals")).json()["approvals"]
        assert [(a["approvalId"], a["status"]) for a in listed] == [(approval_id, "Pending")]
        granted = await client.post(f"/_emulate/connectsoft/approvals/{approval_id}/grant")
        assert granted.json()["status"] == "Granted"
        accepted = await client.post("/runtime/deployments", json=body, headers=headers)
        assert accepted.status_code == 202
        again = await client.post(f"/_emulate/connectsoft/approvals/{approval_id}/grant")
        assert again.status_code == 409


async def test_deployment_lifecycle_with_rollback(start_emulator: Any) -> None:
    running = await start(start_emulator, durations=ZERO)
    async with running.client(service="connectsoft") as client:
        headers = auth(await token(client))
        armed = await client.post("/_emulate/connectsoft/faults/fail-next-health-gate", json={})
        assert armed.json() == {"failNextHealthGate": 1}
        body = {**DEPLOY, "configurationId": None}
        first = (await client.post("/runtime/deployments", json=body, headers=headers)).json()
        record = (
            await client.get(f"/runtime/deployments/{first['deploymentId']}", headers=headers)
        ).json()
        assert record["status"] == "RolledBack"
        assert [h["phase"] for h in record["rolloutHistory"]] == [
            "Requested",
            "Provisioning",
            "Configuring",
            "RollingOut",
            "HealthGating",
            "RollingBack",
            "RolledBack",
        ]
        assert record["rolloutHistory"][5]["reason"] == "injected health gate failure"
        second = (await client.post("/runtime/deployments", json=body, headers=headers)).json()
        record = (
            await client.get(f"/v1/runtime/deployments/{second['deploymentId']}", headers=headers)
        ).json()
        assert record["status"] == "Completed"
        assert record["phase"] == "Completed"
        env = (await client.get("/runtime/environments/env-9f1c2b7d", headers=headers)).json()
        billing = [
            s for s in env["inventory"]["services"] if s["serviceId"] == "module-billing-worker"
        ]
        assert billing[0]["version"] == "1.4.2"


async def test_provisioning_failure_fault(start_emulator: Any) -> None:
    running = await start(start_emulator, durations=ZERO, environments=[], drift_rules=[])
    async with running.client(service="connectsoft") as client:
        headers = auth(await token(client))
        await client.post("/_emulate/connectsoft/faults/fail-next-provisioning", json={"count": 1})
        created = (
            await client.post("/runtime/environments", json=PROVISION, headers=headers)
        ).json()
        env = (
            await client.get(f"/runtime/environments/{created['environmentId']}", headers=headers)
        ).json()
        assert env["status"] == "Failed"
        assert [h["status"] for h in env["history"]] == ["Provisioning", "Failed"]


async def test_unhealthy_fault_shows_in_health(start_emulator: Any) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        headers = auth(await token(client))
        fault = {
            "environmentId": "env-9f1c2b7d",
            "serviceId": "module-reservations-api",
            "check": "sql",
        }
        await client.post("/_emulate/connectsoft/faults/unhealthy", json=fault)
        health = (
            await client.get("/runtime/services/module-reservations-api/health", headers=headers)
        ).json()
        assert health["status"] == "Unhealthy"
        assert health["checks"][1] == {"name": "sql", "status": "Unhealthy", "durationMs": 12}
        await client.post(
            "/_emulate/connectsoft/faults/unhealthy", json={**fault, "unhealthy": False}
        )
        health = (
            await client.get("/runtime/services/module-reservations-api/health", headers=headers)
        ).json()
        assert health["status"] == "Healthy"


async def test_secret_values_are_refused_and_never_echoed(start_emulator: Any) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        headers = auth(await token(client))
        secret = {
            "name": "sql-connection",
            "keyVaultRef": "https://booking-kv.vault.azure.net/secrets/sql-connection",
        }
        body = {
            "tenantId": "connectsoft",
            "environmentId": "env-9f1c2b7d",
            "serviceId": "module-reservations-api",
            "secrets": [secret],
        }
        bound = await client.post("/runtime/secret-bindings", json=body, headers=headers)
        assert bound.status_code == 201
        binding_id = bound.json()["secretBindingId"]
        rotated = await client.post(
            f"/runtime/secret-bindings/{binding_id}/rotate", headers=headers
        )
        assert rotated.status_code == 202
        assert [r["secretName"] for r in rotated.json()["rotations"]] == ["sql-connection"]
        leaky = {**body, "secrets": [{**secret, "value": "Server=db;Password=hunter2"}]}
        refused = await client.post("/runtime/secret-bindings", json=leaky, headers=headers)
        assert refused.status_code == 400
        assert refused.json()["code"] == "SecretValueRefused"
        assert "hunter2" not in refused.text


async def test_event_stream_resumes_with_last_event_id(start_emulator: Any) -> None:
    running = await start(start_emulator)
    async with running.client(service="connectsoft") as client:
        fault = {"environmentId": "env-9f1c2b7d", "serviceId": "module-reservations-api"}
        await client.post("/_emulate/connectsoft/faults/unhealthy", json=fault)
        await client.post(
            "/_emulate/connectsoft/faults/unhealthy", json={**fault, "unhealthy": False}
        )
        first = await read_events(client, {}, 2)
        assert [e["payload"]["status"] for _, e in first] == ["Unhealthy", "Healthy"]
        assert list(first[0][1]) == [
            "eventId",
            "eventType",
            "tenantId",
            "projectId",
            "moduleId",
            "traceId",
            "correlationId",
            "causationId",
            "occurredAt",
            "payload",
        ]
        resumed = await read_events(client, {"Last-Event-ID": first[0][0]}, 1)
        assert resumed[0][1]["eventId"] == first[1][1]["eventId"]


async def read_events(
    client: httpx.AsyncClient, headers: dict[str, str], count: int
) -> list[tuple[str, dict[str, Any]]]:
    """The first `count` events of the stream (read with httpx-sse), each with its SSE id."""
    events: list[tuple[str, dict[str, Any]]] = []
    async with aconnect_sse(
        client, "GET", "/_emulate/connectsoft/events", headers=headers
    ) as source:
        assert source.response.headers["cs-schema-version"] == "1.0"
        async for event in source.aiter_sse():
            events.append((event.id, json.loads(event.data)))
            if len(events) == count:
                break
    return events
