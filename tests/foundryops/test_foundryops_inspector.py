"""FoundryOps' inspector: the page at `GET /_emulate/` on its listener, the control routes it
reads (`/_emulate/foundryops/jobs` and `/credits`, beside audit, decisions and deliveries), and
the page itself in Debian's headless chromium (Playwright in a worker thread; every wait is
Playwright's auto-waiting on the DOM)."""

from __future__ import annotations

import re
from typing import Any

import trio
from chromiumrun import chromium
from foundryops_support import API_KEY, client
from playwright.sync_api import expect

RECORDS = [
    {"company_name": "Acme Inc", "domain": "acme.com"},
    {"company_name": "Nobody At All"},
]


async def run_a_batch(running: Any) -> str:
    """One record matched, one batch job run to its end; the job's id."""
    instance = running.emulator.services["foundryops"]
    async with client(running) as http:
        matched = await http.post(
            "/api/v2/match/record",
            json={"snapshot_id": "dss_snapshot1", "record": RECORDS[0]},
        )
        assert matched.status_code == 200, matched.text
        submitted = await http.post(
            "/api/v2/match/batch", json={"snapshot_id": "dss_snapshot1", "records": RECORDS}
        )
        assert submitted.status_code == 202, submitted.text
    job_id: str = submitted.json()["job_id"]
    await instance.engine.wait_job_finished(job_id)
    return job_id


async def test_the_control_routes_list_jobs_and_credit_accounts(fo: Any) -> None:
    job_id = await run_a_batch(fo)
    async with fo.client(service="foundryops") as http:
        jobs = (await http.get("/_emulate/foundryops/jobs")).json()["jobs"]
        accounts = (await http.get("/_emulate/foundryops/credits")).json()["accounts"]
        page = await http.get("/_emulate/")
    (job,) = [job for job in jobs if job["job_id"] == job_id]
    assert job["status"] == "completed"
    assert job["progress"] == {"processed": 2, "total": 2, "percentage": 100.0}
    assert job["key_id"]
    assert job["key_id"] != API_KEY
    assert accounts
    assert all(set(a) == {"account_id", "mode", "balance"} for a in accounts)
    for text in (str(jobs), str(accounts), page.text):
        assert API_KEY not in text
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<title>FoundryOps inspector</title>" in page.text
    # Self-contained: no external script, style or image.
    assert re.findall(r"""(?:src|href)\s*=""", page.text) == []


async def test_the_page_shows_jobs_credits_and_decisions(fo: Any) -> None:
    job_id = await run_a_batch(fo)
    url = fo.url("foundryops") + "/_emulate/"

    def browse() -> str:
        with chromium() as browser:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(url)
            page.wait_for_selector(f'#jobs tr[data-job-id="{job_id}"][data-status="completed"]')
            expect(page.locator("#decisions")).to_contain_text("dss_snapshot1")
            expect(page.locator("#credits tr").first).to_be_visible()
            expect(page.locator("#requests")).to_contain_text("/api/v2/match/batch")
            expect(page.locator("#status")).to_contain_text("refreshed every second")
            return page.content()

    with trio.fail_after(90):
        html = await trio.to_thread.run_sync(browse)
    assert API_KEY not in html
