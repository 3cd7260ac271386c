"""The inspector kit (emulator/web/inspector.py): the generic page of a service with no part of
its own (ConnectSoft), over HTTP and in headless chromium, and a composed page staying one
self-contained document."""

from __future__ import annotations

import re

import trio
from chromiumrun import chromium
from emulatorrun import StartEmulator
from playwright.sync_api import expect

from emulator.web.inspector import compose_page, generic_page


def test_a_composed_page_is_whole_and_self_contained() -> None:
    page = compose_page("Fabric <inspector>", "emulator.fabric").decode()
    assert "<!--" not in page  # every placeholder filled
    assert page.count("<title>Fabric &lt;inspector&gt;</title>") == 1
    assert 'id="runs"' in page  # the service's tables
    assert "function row(" in page  # the shared helpers
    assert re.findall(r"""(?:src|href)\s*=""", page) == []
    assert b"every_second(" in generic_page()


async def test_the_generic_page_shows_the_state_and_the_requests(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator(services=("connectsoft",))
    url = running.url("connectsoft")
    async with running.client(service="connectsoft") as client:
        discovery = await client.get("/.well-known/openid-configuration")
        assert discovery.status_code == 200

    def browse() -> None:
        with chromium() as browser:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(url + "/_emulate/")
            expect(page.locator("h1")).to_contain_text("connectsoft")
            expect(page.locator("#state")).to_contain_text("environments")
            expect(page.locator("#requests")).to_contain_text("/.well-known/openid-configuration")
            expect(page.locator("#status")).to_contain_text("refreshed every second")

    with trio.fail_after(90):
        await trio.to_thread.run_sync(browse)
