"""The inspector page (`GET /_emulate/`) in Debian's headless chromium, driven by Playwright.

The browser runs in a worker thread (Playwright's sync API); each step that changes the emulator
is called back into the test's Trio loop (`trio.from_thread.run`). A job is moved by a simulated
module (poll, then result post, over real HTTP) only after the page has shown its previous state,
so the page is seen showing queued, running and succeeded in turn. Every wait is Playwright's
auto-waiting on the DOM; nothing sleeps.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from chromiumrun import chromium
from emulatorrun import Running, StartEmulator
from playwright.sync_api import expect

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
APP = "ri.foundry.main.deployed-app.agent-loop"
JANE = {"Authorization": "Bearer local-token-jane"}
MODULE_TOKEN = "local-module-auth-token-for-the-inspector"
SEED: dict[str, Any] = {
    "tokens": {"local-token-jane": {"username": "jane"}},
    "foundry": {
        "users": [{"username": "jane"}],
        "compute_modules": {
            "runtimes": [{"runtime_id": "agent-loop", "module_auth_token": MODULE_TOKEN}],
            "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "agent-loop"}],
            "limits": {"poll_timeout": 5},
        },
    },
}
# Longer than the 1,024 bytes the emulator keeps as a preview.
RESULT = json.dumps({"sum": 3, "padding": "x" * 3000}).encode()


async def test_the_page_shows_a_job_change_state_and_its_detail(
    start_emulator: StartEmulator,
) -> None:
    running: Running = await start_emulator(SEED)
    module = {"Module-Auth-Token": MODULE_TOKEN}
    job: dict[str, str] = {}
    async with running.client() as client:

        async def submit() -> None:
            answer = await client.post(
                CONTOUR + "/deployed-apps/jobs",
                headers=JANE,
                json={
                    "deployedAppRid": APP,
                    "queryType": "add",
                    "query": {"x": 1, "y": 2, "note": "héllo"},
                },
            )
            assert answer.status_code == 200, answer.text
            job["id"] = answer.json()["id"]

        async def take() -> None:
            polled = await client.get(RUNTIMES + "/agent-loop/job", headers=module)
            assert polled.status_code == 200
            assert polled.json()["computeModuleJobV1"]["jobId"] == job["id"]

        async def post_result() -> None:
            posted = await client.post(
                RUNTIMES + f"/agent-loop/results/{job['id']}",
                headers={**module, "Content-Type": "application/octet-stream"},
                content=RESULT,
            )
            assert posted.status_code == 204

        def in_trio(step: Callable[[], Awaitable[None]]) -> None:
            trio.from_thread.run(step)

        def browse() -> dict[str, str]:
            with chromium() as browser:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)
                page.goto(running.http_url + "/_emulate/")
                expect(page.locator("#runtimes")).to_contain_text("agent-loop")
                expect(page.locator("#apps")).to_contain_text(APP)
                in_trio(submit)
                row = f'tr[data-job-id="{job["id"]}"]'
                page.wait_for_selector(row + '[data-state="queued"]')
                in_trio(take)
                page.wait_for_selector(row + '[data-state="running"]')
                in_trio(post_result)
                page.wait_for_selector(row + '[data-state="succeeded"]')
                expect(page.locator(row)).to_contain_text(f"{len(RESULT)} B")
                page.locator(row + " button").click()
                expect(page.locator("#detail-query")).to_contain_text('"note": "héllo"')
                expect(page.locator("#detail-result")).to_contain_text('{"sum": 3, "padding"')
                expect(page.locator("#detail-facts")).to_contain_text("state succeeded")
                # The request log shows the module's poll, with the runtime as principal.
                expect(page.locator("#requests")).to_contain_text("runtime:agent-loop")
                page.screenshot(path="/tmp/inspector.png", full_page=True)
                return {
                    "html": page.content(),
                    "result": page.locator("#detail-result").inner_text(),
                }

        with trio.fail_after(90):
            seen = await trio.to_thread.run_sync(browse)
        # Only the first bytes of the result are shown.
        assert 1000 <= len(seen["result"]) < len(RESULT)
        # The page carries no secret: neither the module's nor the caller's token.
        assert MODULE_TOKEN not in seen["html"]
        assert "local-token-jane" not in seen["html"]
        state = (await client.get("/_emulate/state")).text
        assert MODULE_TOKEN not in state
        detail = await client.get(f"/_emulate/foundry/compute-modules/jobs/{job['id']}")
        assert detail.json()["state"] == "succeeded"
        assert MODULE_TOKEN not in detail.text
        unknown = await client.get("/_emulate/foundry/compute-modules/jobs/nope")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")


async def test_the_page_is_self_contained(emulator: Running) -> None:
    async with emulator.client() as client:
        page = await client.get("/_emulate/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # No external assets: the page must work offline (the only link is an empty data: icon).
    assert re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page.text) == ["data:,"]
    for marker in ("@import", "url("):
        assert marker not in page.text, marker


PYTHON_MODULE = """
from compute_modules.annotations import function


@function
def add(context, event):
    return event["x"] + event["y"]
"""


async def test_the_page_follows_a_real_python_module(
    start_emulator: StartEmulator, tmp_path: Path
) -> None:
    running: Running = await start_emulator(SEED)
    script = tmp_path / "module.py"
    script.write_text(PYTHON_MODULE)
    log = (tmp_path / "launcher.log").open("wb")
    launcher = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "emulator",
            "module",
            "run",
            "--runtime",
            "agent-loop",
            "--emulator",
            running.http_url,
            "--",
            sys.executable,
            str(script),
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    answers: list[httpx.Response] = []
    try:
        async with running.client() as client:

            async def execute() -> None:
                answers.append(
                    await client.post(
                        CONTOUR + "/compute-modules/jobs/execute",
                        headers=JANE,
                        json={"deployedAppRid": APP, "queryType": "add", "query": {"x": 1, "y": 2}},
                    )
                )

            def browse() -> str:
                with chromium() as browser:
                    page = browser.new_page()
                    page.set_default_timeout(60_000)
                    page.goto(running.http_url + "/_emulate/")
                    # The module posted its schema and polls: the runtime shows both.
                    runtime = page.locator("#runtimes tr", has_text="agent-loop")
                    expect(runtime).to_contain_text("add")
                    expect(runtime.locator("td").nth(1)).to_have_text("yes")
                    trio.from_thread.run(execute)
                    done = page.locator('#jobs tr[data-state="succeeded"]')
                    expect(done).to_contain_text("1 B")
                    done.locator("button").click()
                    expect(page.locator("#detail-result")).to_have_text("3")
                    return page.locator("#detail-query").inner_text()

            with trio.fail_after(120):
                query = await trio.to_thread.run_sync(browse)
        assert json.loads(query) == {"x": 1, "y": 2}
        assert [(a.status_code, a.content) for a in answers] == [(200, b"3")]
    finally:
        launcher.send_signal(signal.SIGTERM)
        with trio.move_on_after(20):
            await launcher.wait()
        if launcher.returncode is None:
            launcher.kill()
            await launcher.wait()
    assert launcher.returncode == 128 + signal.SIGTERM
