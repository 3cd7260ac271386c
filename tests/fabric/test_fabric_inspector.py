"""Fabric's inspector: `GET /_emulate/fabric/overview` and the page at `GET /_emulate/` that
reads it, over HTTP and in Debian's headless chromium (Playwright in a worker thread; every
wait is Playwright's auto-waiting on the DOM)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import trio
from chromiumrun import chromium
from fabric_server import ACME, CAROL, FULL_KEY, start_fabric
from playwright.sync_api import expect

CAROL_HEADERS = {"X-Principal-Id": CAROL}


async def test_the_overview_and_the_page(nursery: trio.Nursery, state_dir: Path) -> None:
    server = await start_fabric(nursery, state_dir)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        submitted = await client.post(
            "/v1/jobs",
            json={"modality": "text", "input": {"prompt": "hi"}, "organization_id": ACME},
            headers=CAROL_HEADERS,
        )
        assert submitted.status_code in (200, 201, 202), submitted.text
        job_id = submitted.json()["data"]["id"]
        with trio.fail_after(30):
            async with client.stream(
                "GET", f"/v1/jobs/{job_id}/events", headers=CAROL_HEADERS
            ) as s:
                async for _ in s.aiter_bytes():
                    pass
        overview = (await client.get("/_emulate/fabric/overview")).json()["data"]
        page = await client.get("/_emulate/")
    (job,) = [job for job in overview["jobs"] if job["id"] == job_id]
    assert job["status"] == "completed"
    assert [org["id"] for org in overview["organizations"]].count(ACME) == 1
    assert {key["name"] for key in overview["api_keys"]} >= {"full", "jobs-read"}
    fields = {"id", "name", "prefix", "organization_id", "scopes", "status", "last_used_at"}
    assert all(set(key) == fields for key in overview["api_keys"])
    assert any(event["job_id"] == job_id for event in overview["events"])
    assert overview["providers"]
    assert FULL_KEY not in str(overview)
    assert page.status_code == 200
    assert "<title>Fabric inspector</title>" in page.text
    assert re.findall(r"""(?:src|href)\s*=""", page.text) == []

    def browse() -> str:
        with chromium() as browser:
            view = browser.new_page()
            view.set_default_timeout(30_000)
            view.goto(server.http_url + "/_emulate/")
            view.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"][data-status="completed"]')
            expect(view.locator("#events")).to_contain_text("job.completed")
            expect(view.locator("#organizations")).to_contain_text(ACME)
            expect(view.locator("#keys")).to_contain_text("jobs-read")
            expect(view.locator("#providers tr").first).to_be_visible()
            expect(view.locator("#status")).to_contain_text("refreshed every second")
            return view.content()

    with trio.fail_after(90):
        html = await trio.to_thread.run_sync(browse)
    assert FULL_KEY not in html
