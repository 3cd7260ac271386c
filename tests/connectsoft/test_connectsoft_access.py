"""The access matrix (route x token) and the secret scan of ConnectSoft.

Each REST route and RPC answers 401 without a token, 403 naming the scope when the token lacks
it, 403 TenantMismatch for another tenant's token, and not a refusal for the right token.
Client secrets, the signing key and secret values never appear in an answer, the request log or
the state summary.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_connectsoft_api import DEPLOY, SCALE, start

from emulator.connectsoft.seed import SCOPES

ENV = "env-9f1c2b7d"
BINDING = {
    "tenantId": "connectsoft",
    "environmentId": ENV,
    "serviceId": "module-reservations-api",
    "secrets": [{"name": "s", "keyVaultRef": "https://kv1.vault.azure.net/secrets/s"}],
}
CONFIG = {"tenantId": "connectsoft", "environmentId": ENV, "name": "app", "settings": {}}
# (method, path, scope, body) for every REST route of the source.
ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/runtime/environments", "runtime.environments.write", None),
    ("GET", f"/runtime/environments/{ENV}", "runtime.environments.read", None),
    (
        "POST",
        "/runtime/deployments",
        "runtime.deployments.write",
        {**DEPLOY, "configurationId": None},
    ),
    ("GET", "/runtime/deployments/dep-3a6e1d40", "runtime.deployments.read", None),
    ("POST", "/runtime/configurations", "runtime.configurations.write", CONFIG),
    ("POST", "/runtime/secret-bindings", "runtime.secrets.write", BINDING),
    ("GET", "/runtime/services/module-reservations-api/health", "runtime.health.read", None),
    ("POST", "/runtime/scaling-policies", "runtime.scaling.write", SCALE),
    ("GET", f"/runtime/drift/{ENV}", "runtime.drift.read", None),
]


def other_tenant_body(body: Any) -> Any:
    return None if body is None else {**body, "tenantId": "other"}


@pytest.mark.parametrize(
    ("method", "path", "scope", "body"), ROUTES, ids=[r[1] + " " + r[0] for r in ROUTES]
)
async def test_access_matrix(
    start_emulator: Any, method: str, path: str, scope: str, body: Any
) -> None:
    running = await start(start_emulator)
    provision = {
        "tenantId": "connectsoft",
        "projectId": "p",
        "name": "fresh-env",
        "stage": "dev",
        "region": "westeurope",
        "computeTargets": ["aks"],
    }
    payload = provision if path == "/runtime/environments" else body
    async with running.client(service="connectsoft") as client:

        async def token(**form: str) -> str:
            response = await client.post(
                "/connect/token",
                data={"grant_type": "client_credentials", **form},
                auth=("portal", "portal-secret-value"),
            )
            return str(response.json()["access_token"])

        async def send(bearer: str | None, data: Any) -> Any:
            headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
            return await client.request(method, path, json=data, headers=headers)

        if path.startswith("/runtime/deployments/dep-"):
            # Something to read: a deployment made by the right tenant first.
            await client.post(
                "/runtime/deployments",
                json={**DEPLOY, "configurationId": None},
                headers={"Authorization": f"Bearer {await token()}"},
            )
        anonymous = await send(None, payload)
        assert anonymous.status_code == 401
        others = " ".join(s for s in SCOPES if s != scope)
        narrow = await send(await token(scope=others), payload)
        assert narrow.status_code == 403
        assert narrow.json()["requiredScope"] == scope
        other = await token(tenant="other")
        foreign = await send(other, payload)
        if path.endswith("/health"):
            # A service id alone names no environment: the other tenant has its own service of
            # that id, and never sees ours.
            assert foreign.json()["environmentId"] == "env-0therten"
        else:
            assert foreign.status_code == 403, foreign.text
            assert foreign.json()["code"] == "TenantMismatch"
        if payload is not None and "environmentId" in payload:
            # Claiming to be the other tenant in the body does not open our environment.
            moved = await send(other, other_tenant_body(payload))
            assert moved.status_code == 403, moved.text
            assert moved.json()["code"] == "TenantMismatch"
        allowed = await send(await token(), payload)
        assert allowed.status_code < 300, allowed.text


async def test_secrets_never_echoed(start_emulator: Any) -> None:
    running = await start(start_emulator)
    instance = running.emulator.services["connectsoft"]
    private_d = instance.issuer.key.as_dict(private=True)["d"]
    async with running.client(service="connectsoft") as client:
        issued = await client.post(
            "/connect/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "portal",
                "client_secret": "portal-secret-value",
            },
        )
        bearer = issued.json()["access_token"]
        headers = {"Authorization": f"Bearer {bearer}"}
        leaky = {**BINDING, "secrets": [{**BINDING["secrets"][0], "value": "TopSecretValue42"}]}
        await client.post("/runtime/secret-bindings", json=leaky, headers=headers)
        await client.post("/runtime/secret-bindings", json=BINDING, headers=headers)
        await client.post(
            "/connect/token",
            data={"grant_type": "client_credentials"},
            auth=("portal", "wrong-guess"),
        )
        seen = [
            (await client.get("/_emulate/requests")).text,
            (await client.get("/_emulate/state")).text,
            (await client.get("/_emulate/openapi.json")).text,
            (await client.get("/.well-known/jwks.json")).text,
        ]
    for text in seen:
        for secret in ("portal-secret-value", "wrong-guess", "TopSecretValue42", private_d, bearer):
            assert secret not in text
    assert json.loads(seen[3])["keys"][0]["kty"] == "EC"
