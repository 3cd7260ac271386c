"""Fabric over raw HTTP where the SDK has no method or a limit is the point: production mode,
keep-alive comments, the asset size bound, the run queue bound (429), reset, the WebSocket
mirror."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
import trio.testing
from fabric_server import (
    ACME,
    ALICE,
    CAROL,
    FULL_KEY,
    JWT_SECRET,
    SEED,
    FabricServer,
    start_fabric,
)

from emulator.fabric.core.events import EventDraft

HEADERS = {"X-Principal-Id": CAROL}


def seed_with(**changes: Any) -> dict[str, Any]:
    seed = copy.deepcopy(SEED)
    seed["fabric"].update(changes)
    return seed


def http(server: FabricServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.http_url, timeout=30)


async def test_production_mode_refuses_the_dev_header(
    nursery: trio.Nursery, state_dir: Path
) -> None:
    server = await start_fabric(nursery, state_dir, seed_with(production=True))
    token = jwt.encode({"sub": ALICE, "exp": 4_000_000_000}, JWT_SECRET, algorithm="HS256")
    async with http(server) as client:
        refused = await client.get("/v1/me", headers={"X-Principal-Id": ALICE})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        assert (await client.get("/healthz")).status_code == 200
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.json()["data"]["principal_id"] == ALICE
        assert JWT_SECRET not in me.text


async def test_idle_streams_get_keep_alive_comments(nursery: trio.Nursery, state_dir: Path) -> None:
    seed = seed_with(events={"keepalive_seconds": 0.05})
    server = await start_fabric(nursery, state_dir, seed)
    async with (
        http(server) as client,
        client.stream("GET", "/v1/events/stream", headers=HEADERS) as response,
    ):
        assert response.headers["cache-control"] == "no-cache"
        lines = response.aiter_lines()
        assert await lines.__anext__() == ": keep-alive"


async def test_a_stream_the_hub_writes_gets_its_events_and_keep_alives(
    nursery: trio.Nursery, state_dir: Path
) -> None:
    seed = seed_with(events={"keepalive_seconds": 0.2})
    server = await start_fabric(nursery, state_dir, seed)
    plane, hub = server.instance.plane, server.instance.engine.hub
    async with (
        http(server) as client,
        client.stream("GET", "/v1/events/stream", headers=HEADERS) as response,
    ):
        lines = response.aiter_lines()
        significant = (line async for line in lines if line.startswith((":", "id:")))
        for _ in range(2):
            # Caught up over plain TCP: the hub writes for it, and it still gets keep-alives.
            with trio.fail_after(10):
                while hub.statistics()["written_by_hub"] != 1:
                    await trio.testing.wait_all_tasks_blocked()
                    await trio.lowlevel.checkpoint()
            event = plane.emit(EventDraft("team.created", organization_id=ACME))
            assert await significant.__anext__() == f"id: {event.id}"
            assert await significant.__anext__() == ": keep-alive"


async def test_assets_over_the_limit_are_refused(nursery: trio.Nursery, state_dir: Path) -> None:
    server = await start_fabric(nursery, state_dir, seed_with(assets={"max_asset_bytes": 1000}))
    async with http(server) as client:
        params = {"filename": "big.bin", "organization_id": ACME}
        big = await client.post("/v1/assets", params=params, content=b"x" * 2000, headers=HEADERS)
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "payload_too_large"

        async def chunks() -> Any:
            for _ in range(4):
                yield b"y" * 400  # no Content-Length: the bound is counted as bytes arrive

        streamed = await client.post("/v1/assets", params=params, content=chunks(), headers=HEADERS)
        assert streamed.status_code == 413
        ok = await client.post("/v1/assets", params=params, content=b"z" * 999, headers=HEADERS)
        assert ok.status_code == 201
        assert server.instance.plane.assets.total_bytes == 999
        empty = await client.post("/v1/assets", params=params, content=b"", headers=HEADERS)
        assert empty.status_code == 400


async def test_a_full_run_queue_answers_429(nursery: trio.Nursery, state_dir: Path) -> None:
    seed = seed_with(executor={"queue_limit": 1, "max_active_runs": 1})
    server = await start_fabric(nursery, state_dir, seed)
    body = {"modality": "text", "input": {"prompt": "x"}, "organization_id": ACME}
    slow = {**body, "params": {"delay_ms": 60_000}}
    statuses = []
    async with http(server) as client:
        for payload in (slow, body, body, body):
            statuses.append(await client.post("/v1/jobs", json=payload, headers=HEADERS))
            await trio.testing.wait_all_tasks_blocked()
    # One runs, one waits for a run slot, one fills the queue, the fourth is refused.
    assert [r.status_code for r in statuses] == [201, 201, 201, 429]
    refused = statuses[-1]
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert len(server.instance.plane.jobs) == 3  # the refused one created nothing


async def test_reset_goes_back_to_the_seed(nursery: trio.Nursery, state_dir: Path) -> None:
    server = await start_fabric(nursery, state_dir)
    async with http(server) as client:
        body = {"modality": "text", "input": {"prompt": "x"}, "organization_id": ACME}
        assert (await client.post("/v1/jobs", json=body, headers=HEADERS)).status_code == 201
        state = (await client.get("/_emulate/state")).json()
        assert "jobs" in json.dumps(state)
        assert (await client.post("/_emulate/reset")).status_code == 200
        listed = await client.get("/v1/jobs", headers=HEADERS)
        assert listed.json()["data"]["items"] == []
        # Seeded keys survive a reset.
        me = await client.get("/v1/me", headers={"Authorization": "Bearer " + FULL_KEY})
        assert me.status_code == 200


@pytest.mark.parametrize("server_kind", ["emulator", "hypercorn"])
async def test_websocket_mirror(nursery: trio.Nursery, state_dir: Path, server_kind: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server = await start_fabric(nursery, state_dir, http_server=server_kind)
    ws_url = server.http_url.replace("http://", "ws://") + "/v1/events/ws"

    def refused() -> tuple[int, dict[str, Any]]:
        with pytest.raises(InvalidStatus) as caught:
            connect(ws_url)
        response = caught.value.response
        return response.status_code, json.loads(response.body or b"{}")

    status, body = await trio.to_thread.run_sync(refused)
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert set(body) == {"meta", "context", "data", "error", "links"}

    received: list[dict[str, Any]] = []
    opened = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def listen() -> None:
        with connect(ws_url, additional_headers=HEADERS) as ws:
            trio.from_thread.run_sync(opened.set, trio_token=token)
            while True:
                message = json.loads(ws.recv(timeout=10))
                received.append(message)
                if message["kind"] == "job_completed":
                    return

    async with trio.open_nursery() as inner:
        inner.start_soon(trio.to_thread.run_sync, listen)
        await opened.wait()
        await trio.testing.wait_all_tasks_blocked()
        async with http(server) as client:
            body = {"modality": "text", "input": {"prompt": "ws"}, "organization_id": ACME}
            job = (await client.post("/v1/jobs", json=body, headers=HEADERS)).json()["data"]
    assert next(m["kind"] for m in received if m["job_id"] == job["id"]) == "job_created"
    assert received[-1]["job_id"] == job["id"]


@pytest.mark.parametrize("tls", [False, True], ids=["h2c", "h2"])
async def test_http2_jobs_and_streams(nursery: trio.Nursery, state_dir: Path, tls: bool) -> None:
    server = await start_fabric(nursery, state_dir)
    if tls:
        client = httpx.AsyncClient(
            base_url=server.https_url, verify=server.ssl_context(), http2=True, timeout=30
        )
    else:
        client = httpx.AsyncClient(base_url=server.http_url, http1=False, http2=True, timeout=30)
    async with client:
        body = {"modality": "text", "input": {"prompt": "over h2"}, "organization_id": ACME}
        submitted = await client.post("/v1/jobs", json=body, headers=HEADERS)
        assert submitted.http_version == "HTTP/2"
        job_id = submitted.json()["data"]["id"]
        kinds = []
        async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=HEADERS) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    kinds.append(json.loads(line[6:])["kind"])
        assert kinds == ["job_created", "job_started", "job_completed"]
        usage = await client.get(f"/v1/jobs/{job_id}/usage", headers=HEADERS)
        assert usage.json()["data"]["total_tokens"] == 4


async def test_a_client_leaving_a_stream_is_no_error(
    nursery: trio.Nursery, state_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await start_fabric(nursery, state_dir)
    hub = server.instance.engine.hub
    async with http(server) as client:
        body = {"modality": "text", "input": {"prompt": "x"}, "organization_id": ACME}
        async with client.stream("GET", "/v1/events/stream", headers=HEADERS) as stream:
            await hub.wait_subscribers(1)
            await client.post("/v1/jobs", json=body, headers=HEADERS)
            lines = stream.aiter_lines()
            first = await lines.__anext__()
            assert first.startswith("id: "), first
        await hub.wait_subscribers(0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_client_leaving_the_stream_of_a_slow_job_is_noticed(
    nursery: trio.Nursery, state_dir: Path
) -> None:
    # A provider that answers after ten minutes: the job stream waits, and its client leaves.
    slow = [{"id": "slow", "modalities": ["text"], "models": ["slow-1"], "latency_ms": 600_000}]
    server = await start_fabric(nursery, state_dir, seed_with(providers=slow))
    hub = server.instance.engine.hub
    body = {"modality": "text", "input": {"prompt": "x"}, "model": "slow-1"}
    async with http(server) as client:
        job = (await client.post("/v1/jobs", json={**body, "organization_id": ACME},
                                 headers=HEADERS)).json()["data"]  # fmt: skip
        async with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=HEADERS) as got:
            lines = got.aiter_lines()
            assert (await lines.__anext__()).startswith("id: ")
            await hub.wait_subscribers(1)
    # The stream has no event to write for ten minutes: the watch it starts after WATCH_AFTER
    # (one second) sees the connection close and the subscription goes.
    with trio.fail_after(10):
        await hub.wait_subscribers(0)


async def test_a_stream_too_far_behind_ends_with_the_overflow_comment_and_resumes(
    nursery: trio.Nursery, state_dir: Path
) -> None:
    server = await start_fabric(nursery, state_dir, seed_with(events={"subscriber_buffer": 4}))
    plane, hub = server.instance.plane, server.instance.engine.hub

    def burst(count: int) -> list[str]:
        # Published in one step (no checkpoint): the stream cannot read in between.
        drafts = [EventDraft("team.created", organization_id=ACME) for _ in range(count)]
        return [plane.emit(draft).id for draft in drafts]

    async with http(server) as client:
        async with client.stream("GET", "/v1/events/stream", headers=HEADERS) as stream:
            await hub.wait_subscribers(1)
            first = burst(2)
            lines = stream.aiter_lines()
            seen = [line[4:] async for line in _take_ids(lines, 2)]
            assert seen == first
            missed = burst(5)  # more than subscriber_buffer (4) behind: dropped
            # No further event: the comment, then the end of the stream.
            significant = (line async for line in lines if line.startswith((":", "id:")))
            note = await significant.__anext__()
            assert note == f": overflow; reconnect with Last-Event-ID: {first[-1]}"
            assert [line async for line in significant] == []
        resume = {**HEADERS, "Last-Event-ID": first[-1]}
        async with client.stream("GET", "/v1/events/stream", headers=resume) as stream:
            replayed = [line[4:] async for line in _take_ids(stream.aiter_lines(), 5)]
            assert replayed == missed


async def _take_ids(lines: Any, count: int) -> Any:
    """The first `count` `id:` lines of an SSE body."""
    taken = 0
    async for line in lines:
        if line.startswith("id: "):
            yield line
            taken += 1
            if taken == count:
                return


@pytest.mark.parametrize("modality", [["text"], {"a": 1}, "image", "video", None, 3])
async def test_stream_refuses_what_it_cannot_stream(
    nursery: trio.Nursery, state_dir: Path, modality: Any
) -> None:
    server = await start_fabric(nursery, state_dir)
    async with http(server) as client:
        body = {"modality": modality, "input": {"prompt": "x"}}
        refused = await client.post("/v1/providers/execute/stream", json=body, headers=HEADERS)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "validation_error"
