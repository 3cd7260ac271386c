"""The token endpoint, getCurrent and /multipass/api/me as raw ASGI routes (issue 7, scenario 7).

They moved from Quart blueprints to emulator.web.rawasgi; these tests pin what Quart used to do
for them by itself (HEAD, OPTIONS, 405 with Allow), the token answer's headers over HTTP/1.1
and HTTP/2, the request log and the OpenAPI document, and that the raw route reads Content-Type
exactly as Quart's `request.mimetype` did.
"""

from __future__ import annotations

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator
from werkzeug.http import parse_options_header

from emulator.web.http import mimetype_of

TOKEN = "/multipass/api/oauth2/token"
GET_CURRENT = "/api/v2/admin/users/getCurrent"
ME = "/multipass/api/me"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SERVICE_FORM = {
    "grant_type": "client_credentials",
    "client_id": "foundry-service",
    "client_secret": "foundry-service-secret",
    "scope": "api:admin-read",
}
JANE = {"Authorization": "Bearer local-token-jane"}
CONJURE_KEYS = {"errorCode", "errorName", "errorDescription", "errorInstanceId", "parameters"}


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        " application/x-www-form-urlencoded ;charset=utf-8",
        "\tapplication/json\t",
        "application/x-www-form-urlencoded,text/plain",
        ";charset=utf-8",
        'text/plain; a="b;c"',
    ],
)
def test_mimetype_of_agrees_with_quarts_request_mimetype(value: str | None) -> None:
    # Quart's request.mimetype is werkzeug's parse_options_header(...)[0].lower().
    assert mimetype_of(value) == parse_options_header(value or "")[0].lower()


async def issue_service_token(client: httpx.AsyncClient) -> httpx.Response:
    with trio.fail_after(10):
        return await client.post(TOKEN, data=SERVICE_FORM)


@pytest.mark.parametrize(
    ("tls", "http2"), [(False, False), (False, True), (True, True)], ids=["h11", "h2c", "h2"]
)
async def test_token_then_get_current_over_each_protocol(
    start_emulator: StartEmulator, tls: bool, http2: bool
) -> None:
    running = await start_emulator()
    async with running.client(tls=tls, http2=http2) as client:
        issued = await issue_service_token(client)
        assert issued.status_code == 200, issued.text
        assert issued.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert issued.headers["content-type"] == "application/json"
        assert issued.headers["cache-control"] == "no-store"
        assert issued.headers["pragma"] == "no-cache"
        body = issued.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert body["scope"] == "api:admin-read"
        bearer = {"Authorization": f"Bearer {body['access_token']}"}
        with trio.fail_after(10):
            current = await client.get(GET_CURRENT, headers=bearer)
        assert current.status_code == 200, current.text
        assert current.headers["content-type"] == "application/json"
        assert current.json()["username"] == "foundry-service"
        with trio.fail_after(10):
            me = await client.get(ME, headers=bearer)
        assert me.status_code == 200, me.text
        assert set(me.json()) == {"id", "username", "attributes"}
        # The token is the same secret whichever protocol asks; a wrong secret stays refused.
        refused = await client.post(TOKEN, data={**SERVICE_FORM, "client_secret": "nope"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Basic realm="multipass"'
        assert refused.headers["cache-control"] == "no-store"
        assert refused.json()["error"] == "invalid_client"
        assert "foundry-service-secret" not in refused.text


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_other_methods_on_the_token_path_are_405_listing_post(
    emulator: Running, method: str
) -> None:
    async with emulator.client() as client:
        with trio.fail_after(10):
            response = await client.request(method, TOKEN, data=SERVICE_FORM)
        assert response.status_code == 405
        assert response.headers["allow"] == "OPTIONS, POST"
        assert response.json() == {
            "error": "method_not_allowed",
            "error_description": f"{method} is not allowed on {TOKEN}.",
        }
        # No token was issued by the refused request.
        assert emulator.foundry.identity.tokens.count() == 2


async def test_options_answers_allow_as_quart_did(emulator: Running) -> None:
    async with emulator.client() as client:
        for path, allow in (
            (TOKEN, "OPTIONS, POST"),
            (GET_CURRENT, "GET, HEAD, OPTIONS"),
            (ME, "GET, HEAD, OPTIONS"),
        ):
            with trio.fail_after(10):
                response = await client.options(path)
            assert response.status_code == 200, path
            assert response.headers["allow"] == allow
            assert response.content == b""


async def test_head_on_the_current_user_routes_has_the_get_headers_and_no_body(
    emulator: Running,
) -> None:
    async with emulator.client() as client:
        for path in (GET_CURRENT, ME):
            with trio.fail_after(10):
                got = await client.get(path, headers=JANE)
                head = await client.head(path, headers=JANE)
                refused = await client.head(path)
            assert got.status_code == head.status_code == 200
            assert head.content == b""
            assert head.headers["content-length"] == str(len(got.content))
            assert head.headers["content-type"] == "application/json"
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == 'Bearer realm="foundry"'
            assert refused.content == b""


async def test_wrong_method_on_get_current_is_a_conjure_405(emulator: Running) -> None:
    async with emulator.client() as client:
        with trio.fail_after(10):
            response = await client.post(GET_CURRENT, headers=JANE, json={})
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"
        body = response.json()
        assert set(body) == CONJURE_KEYS
        assert body["errorName"] == "Default:MethodNotAllowed"
        assert body["parameters"] == {"method": "POST"}


async def test_the_raw_routes_reach_the_request_log_and_the_openapi_document(
    emulator: Running,
) -> None:
    async with emulator.client() as client:
        with trio.fail_after(10):
            assert (await client.delete("/_emulate/requests")).status_code == 204
            assert (await issue_service_token(client)).status_code == 200
            assert (await client.get(GET_CURRENT, headers=JANE)).status_code == 200
            assert (await client.get(ME)).status_code == 401
            log = (await client.get("/_emulate/requests")).json()["requests"]
            document = (await client.get("/_emulate/openapi.json")).json()
    seen = [(r["method"], r["path"], r["status"], r["family"], r["principal"]) for r in log]
    assert seen == [
        ("POST", TOKEN, 200, "oauth", None),
        ("GET", GET_CURRENT, 200, "foundry", "jane"),
        ("GET", ME, 401, "oauth", None),
    ]
    paths = document["paths"]
    assert set(paths[TOKEN]) == {"post"}
    assert set(paths[GET_CURRENT]) == {"get"}
    assert set(paths[ME]) == {"get"}
    assert paths[TOKEN]["post"]["x-error-family"] == "oauth"
    assert paths[GET_CURRENT]["get"]["x-error-family"] == "foundry"
    # revoke_token and the enrollment stay Quart routes and are still listed.
    assert "post" in paths["/multipass/api/oauth2/revoke_token"]
    assert "get" in paths["/api/v2/admin/enrollments/getCurrent"]


async def test_a_reset_is_seen_by_the_raw_routes(emulator: Running) -> None:
    async with emulator.client() as client:
        issued = (await issue_service_token(client)).json()["access_token"]
        bearer = {"Authorization": f"Bearer {issued}"}
        with trio.fail_after(10):
            assert (await client.get(GET_CURRENT, headers=bearer)).status_code == 200
            assert (await client.post("/_emulate/reset")).status_code in (200, 204)
            after = await client.get(GET_CURRENT, headers=bearer)
            again = await issue_service_token(client)
        assert after.status_code == 401
        assert again.status_code == 200
