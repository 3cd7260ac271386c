"""No secret leaks: raw API keys appear only in their creation answer, the JWT secret nowhere,
across every answer of a full session and the emulator's own control routes and logs."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import jwt
import pytest
import trio
from fabric_server import ACME, ALICE, CAROL, FULL_KEY, JWT_SECRET, start_fabric


async def test_secrets_stay_where_they_belong(
    nursery: trio.Nursery, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_fabric(nursery, state_dir, access_log=True)
    token = jwt.encode({"sub": ALICE, "exp": 4_000_000_000}, JWT_SECRET, algorithm="HS256")
    answers: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:

        async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
            response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
            answers.append(response)
            return response

        alice = {"Authorization": f"Bearer {token}"}
        created = await call(
            "POST", "/v1/api-keys", json={"name": "leaky", "organization_id": ACME}, headers=alice
        )
        raw = created.json()["data"]["key"]
        keyed = {"Authorization": f"Bearer {raw}"}
        await call("GET", "/v1/api-keys", headers=alice)
        await call("GET", f"/v1/api-keys/{created.json()['data']['id']}", headers=alice)
        await call("GET", "/v1/me", headers=keyed)
        await call("GET", "/v1/me", headers={"Authorization": f"Bearer {FULL_KEY}"})
        await call("GET", f"/v1/me?api_key={raw}", headers=keyed)
        job = {"modality": "text", "input": {"prompt": "x"}, "organization_id": ACME}
        await call("POST", "/v1/jobs", json=job, headers={"X-Principal-Id": CAROL})
        await call("GET", f"/v1/organizations/{ACME}/audit-logs", headers=alice)
        await call("GET", "/v1/audit-logs", headers=alice)
        await call("GET", "/v1/me", headers={"Authorization": "Bearer fab_wrongwrongwrongwrong"})
        await call("GET", "/v1/me", headers={"Authorization": "Bearer not.a.jwt"})
        await call("GET", "/openapi.json")
        await call("GET", "/_emulate/state")
        await call("GET", "/_emulate/requests")
        await call("GET", "/_emulate/openapi.json")
        await call("GET", "/_emulate/fabric/overview")
        await call("GET", "/_emulate/")
    assert created.status_code == 201
    for response in answers:
        if response is not created:
            assert raw not in response.text, response.request.url
        assert FULL_KEY not in response.text, response.request.url
        assert JWT_SECRET not in response.text, response.request.url
        assert token not in response.text, response.request.url
    # The emulator's own log lines (the test's httpx logs its URLs, secrets and all).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("emulator"))
    for secret in (raw, FULL_KEY, JWT_SECRET, token):
        assert secret not in logged
    assert "/v1/api-keys" in logged  # the access log did record the session
