"""The authorization-code flow end to end in a real headless browser (Debian's chromium driven by
Playwright) with the real foundry-platform-sdk's PublicClientAuth: sign_in() URL -> sign-in page
-> deny once, then pick a user with the keyboard -> a local listener receives the redirect ->
set_token(code, state) with PKCE S256 -> getCurrent -> the SDK's refresh rotates the refresh
token -> sign_out() revokes."""

from __future__ import annotations

import functools
import warnings
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import trio
import yaml
from chromiumrun import chromium
from foundry_sdk import Config, FoundryClient, PublicClientAuth

from emulator.platform.seeds import default_seed_path

PAGE = b"<!doctype html><html lang=en><title>Signed in</title><p>You can close this window.</p>"


async def open_listener(
    nursery: trio.Nursery,
) -> tuple[int, trio.MemoryReceiveChannel[str]]:
    """A tiny HTTP server on 127.0.0.1 port 0 standing in for the CLI's redirect listener; it
    reports the target of every request to /callback."""
    send, receive = trio.open_memory_channel[str](16)

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                head += chunk
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) == 3 and parts[1].startswith("/callback"):
            send.send_nowait(parts[1])
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(PAGE)
        ) + PAGE
        await stream.send_all(response)
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), handle, 0)
    return listeners[0].socket.getsockname()[1], receive


def drive_browser(url: str, redirect: str) -> dict[str, Any]:
    """Deny once, then sign in as Jane using only the keyboard; what the page showed."""
    seen: dict[str, Any] = {}
    with chromium() as browser:
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.goto(url)
        seen["title"] = page.title()
        users = page.get_by_role("group", name="Continue as").get_by_role("button")
        seen["users"] = users.all_inner_texts()
        seen["scopes"] = page.get_by_role("listitem").all_inner_texts()
        page.get_by_role("button", name="Deny access").click()
        page.wait_for_url(lambda target: target.startswith(redirect))
        seen["denied_url"] = page.url

        page.goto(url)
        for _ in range(20):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement && document.activeElement.value") == ("jane"):
                break
        seen["focused"] = page.evaluate("document.activeElement.textContent")
        page.keyboard.press("Enter")
        page.wait_for_url(lambda target: target.startswith(redirect))
        seen["signed_in_url"] = page.url
    return seen


async def test_public_client_sign_in_in_a_real_browser(
    start_emulator: Any, nursery: trio.Nursery
) -> None:
    seed = yaml.safe_load(default_seed_path().read_text(encoding="utf-8"))
    # Shorter than the SDK's 60 s expiry margin, so every get_token() refreshes (and rotates).
    seed["foundry"]["oauth"] = {"access_token_ttl": 30}
    running = await start_emulator(seed)
    host = running.http_url.split("://", 1)[1]
    port, callbacks = await open_listener(nursery)
    redirect = f"http://127.0.0.1:{port}/callback"
    auth = PublicClientAuth(
        "foundry-cli",
        redirect,
        hostname=host,
        config=Config(scheme="http", timeout=20),
        scopes=["api:admin-read"],
        should_refresh=False,
    )

    with trio.fail_after(120):
        url = await trio.to_thread.run_sync(auth.sign_in)
        sign_in_query = parse_qs(urlsplit(url).query)
        assert sign_in_query["code_challenge_method"] == ["S256"]
        assert sign_in_query["scope"] == ["api:admin-read offline_access"]
        seen = await trio.to_thread.run_sync(drive_browser, url, redirect, abandon_on_cancel=True)
        denied = parse_qs(urlsplit(await callbacks.receive()).query)
        granted = parse_qs(urlsplit(await callbacks.receive()).query)

    assert seen["title"] == "Sign in to Foundry - Foundry CLI"
    assert len(seen["users"]) == 2
    assert "Jane Smith" in seen["users"][0]
    assert "Bob Jones" in seen["users"][1]
    assert any("api:admin-read" in item for item in seen["scopes"])
    assert "Jane Smith" in seen["focused"]
    assert denied["error"] == ["access_denied"]
    assert denied["state"] == sign_in_query["state"]
    assert "code" not in denied
    assert granted["state"] == sign_in_query["state"]
    assert seen["signed_in_url"].startswith(redirect + "?code=")

    def use_the_sdk() -> dict[str, Any]:
        auth.set_token(granted["code"][0], granted["state"][0])
        with warnings.catch_warnings():
            # The SDK warns that the auth object and the client share a hostname; expected here.
            warnings.simplefilter("ignore", UserWarning)
            client = FoundryClient(
                auth=auth, hostname=host, config=Config(scheme="http", timeout=20)
            )
            first = auth.get_token()
            user = client.admin.User.get_current()
            second = auth.get_token()
        auth.sign_out()
        return {"first": first, "second": second, "user": user}

    with trio.fail_after(60):
        result = await trio.to_thread.run_sync(use_the_sdk)
    assert result["user"].username == "jane"
    first, second = result["first"], result["second"]
    assert first.refresh_token is not None
    assert second.refresh_token is not None
    assert first.refresh_token != second.refresh_token
    assert first.access_token != second.access_token

    async with running.client() as http:
        signed_out = await http.get(
            "/api/v2/admin/users/getCurrent",
            headers={"Authorization": f"Bearer {second.access_token}"},
        )
        assert signed_out.status_code == 401
        revoked = await refresh(http, second.refresh_token)
        assert "revoked" in revoked["error_description"]
        rotated = await refresh(http, first.refresh_token)
        assert "already used" in rotated["error_description"]


async def refresh(http: httpx.AsyncClient, token: str) -> dict[str, Any]:
    response = await http.post(
        "/multipass/api/oauth2/token",
        data={"grant_type": "refresh_token", "client_id": "foundry-cli", "refresh_token": token},
    )
    assert response.status_code == 400
    body: dict[str, Any] = response.json()
    assert body["error"] == "invalid_grant"
    return body
