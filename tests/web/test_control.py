"""The /_emulate control routes: state, reset and the redacted request log."""

from __future__ import annotations

import logging

import pytest
from emulatorrun import Running, StartEmulator

from emulator.web.app import Emulator


async def test_state_describes_services_without_secrets(emulator: Running) -> None:
    async with emulator.client() as client:
        response = await client.get("/_emulate/state")
    assert response.status_code == 200
    body = response.json()
    assert body["seed"].endswith("default.yaml")
    assert "foundry" in body["services"]
    for secret in (
        "local-token-jane",
        "local-module-auth-token",
        "foundry-web-secret",
        "example-secret-value",
    ):
        assert secret not in response.text


async def test_request_log_records_and_redacts(emulator: Running) -> None:
    async with emulator.client() as client:
        await client.get("/nothing?code=abc123secret&state=visible&client_secret=hunter2")
        await client.get("/_emulate/health")  # quiet: not recorded
        response = await client.get("/_emulate/requests")
    assert response.status_code == 200
    records = response.json()["requests"]
    assert [r["path"] for r in records] == ["/nothing"]
    record = records[0]
    assert record["status"] == 404
    assert record["method"] == "GET"
    assert record["durationMs"] >= 0
    assert "state=visible" in record["query"]
    assert "abc123secret" not in response.text
    assert "hunter2" not in response.text
    assert record["family"] == "emulator"


async def test_request_log_clear_and_limit(emulator: Running) -> None:
    async with emulator.client() as client:
        for index in range(5):
            await client.get(f"/api/v2/missing-{index}")
        limited = (await client.get("/_emulate/requests", params={"limit": 2})).json()["requests"]
        assert [r["path"] for r in limited] == ["/api/v2/missing-3", "/api/v2/missing-4"]
        assert limited[0]["family"] == "foundry"
        bad = await client.get("/_emulate/requests", params={"limit": "x"})
        assert bad.status_code == 400
        assert (await client.delete("/_emulate/requests")).status_code == 204
        assert (await client.get("/_emulate/requests")).json()["requests"] == []


async def test_request_log_is_bounded(emulator: Running) -> None:
    log = emulator.emulator.request_log
    async with emulator.client() as client:
        for index in range(log.capacity + 5):
            await client.get(f"/x{index}")
    assert len(log.recent()) == log.capacity
    assert log.recent()[-1].path == f"/x{log.capacity + 4}"


async def test_reset_answers(emulator: Running) -> None:
    async with emulator.client() as client:
        response = await client.post("/_emulate/reset")
    assert response.status_code == 200
    assert response.json()["status"] == "reset"


async def test_openapi_is_generated_from_the_routes(emulator: Running) -> None:
    async with emulator.client() as client:
        response = await client.get("/_emulate/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    app = emulator.emulator
    served = {rule.rule for rule in _quart_rules(app)}
    assert "/_emulate/health" in paths
    assert "get" in paths["/_emulate/health"]
    assert len(paths) >= len({r for r in served if "<" not in r})
    assert paths["/_emulate/requests"].keys() >= {"get", "delete"}


def _quart_rules(emulator_graph: Emulator) -> list[object]:
    from emulator.web.app import create_app

    app = create_app(emulator_graph, emulator_graph.primary)
    return [rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]


async def test_access_log_lines_are_redacted(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await start_emulator(access_log=True, tls_enabled=False)
    async with running.client() as client:
        await client.get(
            "/api/v2/admin/users/getCurrent?code=topsecretcode",
            headers={"Authorization": "Bearer local-token-jane"},
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "emulator.access"]
    assert any("GET /api/v2/admin/users/getCurrent?code=%5Bredacted%5D" in line for line in lines)
    assert any(" 200 " in line and line.endswith("jane") for line in lines)
    server_records = [r for r in caplog.records if r.name.startswith(("emulator", "hypercorn"))]
    everything = "\n".join(r.getMessage() + repr(r.args) for r in server_records)
    assert "local-token-jane" not in everything
    assert "topsecretcode" not in everything
