"""Multipass OAuth 2.0 over real HTTP: the sign-in page, codes with PKCE, refresh rotation,
client credentials, revocation, token expiry, and every error path of RFC 6749 / 7636 / 7009."""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from emulator.foundry.core.errors import NotFound
from emulator.foundry.core.identity import Identity
from emulator.foundry.core.oauth import (
    AuthorizationRequest,
    AuthorizeParams,
    CodeState,
    IllegalTransition,
    OAuthClient,
    OAuthError,
    OAuthServer,
    apply_code_event,
    redirect_uri_matches,
)
from emulator.platform.clock import ManualClock, Randomness
from emulator.platform.seeds import default_seed_path, seed_from_mapping
from emulator.services import registered_services

AUTHORIZE = "/multipass/api/oauth2/authorize"
CALLBACK = "/multipass/api/oauth2/authorize/callback"
TOKEN = "/multipass/api/oauth2/token"
REVOKE = "/multipass/api/oauth2/revoke_token"
GET_CURRENT = "/api/v2/admin/users/getCurrent"
CLI_REDIRECT = "http://127.0.0.1:8765/callback"
WEB_REDIRECT = "http://localhost:3000/callback"
VERIFIER = "v" * 20 + "-._~" + "0123456789abcdefghijklmnop"  # 50 unreserved characters


def challenge_of(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def cli_params(**overrides: str | None) -> dict[str, str]:
    """An authorization request of the public client foundry-cli with PKCE S256."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "foundry-cli",
        "redirect_uri": CLI_REDIRECT,
        "scope": "api:admin-read offline_access",
        "state": "state-123",
        "code_challenge": challenge_of(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {key: value for key, value in params.items() if value is not None}


def web_params(**overrides: str | None) -> dict[str, str]:
    """An authorization request of the confidential client foundry-web (no PKCE)."""
    return cli_params(
        client_id="foundry-web",
        redirect_uri=WEB_REDIRECT,
        code_challenge=None,
        code_challenge_method=None,
        **overrides,
    )


def query_of(response: httpx.Response) -> dict[str, str]:
    location = response.headers["location"]
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


async def sign_in(client: httpx.AsyncClient, params: dict[str, str], username: str = "jane") -> str:
    """Post the picker's form as the browser would; the authorization code."""
    response = await client.post(CALLBACK, data={**params, "username": username})
    assert response.status_code == 303, response.text
    query = query_of(response)
    assert query.get("state") == params.get("state")
    return query["code"]


async def exchange(client: httpx.AsyncClient, code: str, **fields: str) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "client_id": "foundry-cli",
        "code": code,
        "redirect_uri": CLI_REDIRECT,
        "code_verifier": VERIFIER,
    }
    data.update(fields)
    return await client.post(TOKEN, data={k: v for k, v in data.items() if v != "<omit>"})


async def cli_tokens(client: httpx.AsyncClient, username: str = "jane") -> dict[str, Any]:
    code = await sign_in(client, cli_params(), username)
    response = await exchange(client, code)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def current_user(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(GET_CURRENT, headers={"Authorization": f"Bearer {token}"})


def assert_oauth_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == code, body
    assert body["error_description"]
    return body


# The sign-in page ------------------------------------------------------------------------------


async def test_sign_in_page_names_the_app_scopes_and_active_humans(emulator: Any) -> None:
    async with emulator.client() as client:
        response = await client.get(AUTHORIZE, params=cli_params(state='"><script>x</script>'))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert "Foundry CLI" in page
    for text in ("api:admin-read", "offline_access", "Jane Smith", "Bob Jones"):
        assert text in page
    assert "Carol" not in page  # inactive
    assert "<script>" not in page  # the state is escaped, not injected
    assert "&quot;&gt;&lt;script&gt;" in page
    assert 'name="decision" value="deny"' in page
    assert "<legend>Continue as</legend>" in page
    # No external assets: no scripts, stylesheets, images or fonts from anywhere.
    for text in ("<link", "src=", "url("):
        assert text not in page


async def test_deny_redirects_with_access_denied_and_state(emulator: Any) -> None:
    async with emulator.client() as client:
        response = await client.post(CALLBACK, data={**cli_params(), "decision": "deny"})
    assert response.status_code == 303
    assert response.headers["location"].startswith(CLI_REDIRECT + "?")
    query = query_of(response)
    assert query["error"] == "access_denied"
    assert query["state"] == "state-123"
    assert "code" not in query


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({**cli_params(), "client_id": ""}, "client_id parameter is required"),
        (cli_params(client_id="no-such-app"), "No OAuth client &#x27;no-such-app&#x27;"),
        (cli_params(redirect_uri="http://127.0.0.1:8765/elsewhere"), "is not registered"),
        (cli_params(redirect_uri="https://127.0.0.1/callback"), "is not registered"),
        (cli_params(redirect_uri="http://evil.example/callback"), "is not registered"),
        (cli_params(redirect_uri="http://127.0.0.1:8765/callback#frag"), "fragment"),
        (cli_params(redirect_uri="javascript:alert(1)"), "javascript: scheme"),
        (cli_params(redirect_uri="http://user@127.0.0.1/callback"), "user information"),
        (cli_params(redirect_uri="http://127.0.0.1:99999/callback"), "not a valid URL"),
        # foundry-cli registers two URIs, so it must name one.
        (cli_params(redirect_uri=None), "redirect_uri parameter is required"),
    ],
    ids=[
        "missing-client",
        "unknown-client",
        "other-path",
        "other-scheme",
        "other-host",
        "fragment",
        "javascript",
        "userinfo",
        "bad-port",
        "ambiguous-default",
    ],
)
async def test_authorize_errors_that_must_not_redirect_are_an_html_page(
    emulator: Any, params: dict[str, str], fragment: str
) -> None:
    async with emulator.client() as client:
        page = await client.get(AUTHORIZE, params=params)
        posted = await client.post(CALLBACK, data={**params, "username": "jane"})
    for response in (page, posted):
        assert response.status_code == 400
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert fragment in response.text


async def test_repeated_client_id_is_refused_without_redirect(emulator: Any) -> None:
    async with emulator.client() as client:
        url = AUTHORIZE + "?client_id=foundry-cli&client_id=foundry-web&response_type=code"
        response = await client.get(url)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "repeated" in response.text


SEED_WITH_ODD_CLIENTS: dict[str, Any] = {
    "foundry": {
        "users": [{"username": "jane"}],
        "oauth_clients": [
            {
                "client_id": "service-only",
                "client_secret": "s3cret-value",
                "redirect_uris": ["http://127.0.0.1/cb"],
                "grant_types": ["client_credentials"],
            },
            {
                "client_id": "narrow",
                "client_secret": "narrow-secret",
                "redirect_uris": ["https://app.example.com/cb"],
                "grant_types": ["authorization_code"],
                "allowed_scopes": ["api:admin-read"],
            },
        ],
    }
}


@pytest.mark.parametrize(
    ("params", "error", "fragment"),
    [
        ({"response_type": None}, "invalid_request", "response_type"),
        ({"response_type": "token"}, "unsupported_response_type", "only response_type=code"),
        ({"client_id": "service-only"}, "unauthorized_client", "authorization_code"),
        ({"scope": "api:ontologies-read"}, "invalid_scope", "api:ontologies-read"),
        ({"scope": "api:admin-read offline_access"}, "invalid_scope", "offline_access"),
        ({"scope": "bad\x7fscope"}, "invalid_scope", "malformed"),
        ({"code_challenge_method": "S512"}, "invalid_request", "S512"),
        ({"code_challenge": "short"}, "invalid_request", "43 to 128"),
        ({"code_challenge": None}, "invalid_request", "without code_challenge"),
        ({}, None, None),
    ],
    ids=[
        "no-response-type",
        "token-response-type",
        "grant-not-allowed",
        "scope-not-allowed",
        "offline-without-refresh-grant",
        "malformed-scope",
        "pkce-method",
        "pkce-challenge-syntax",
        "method-without-challenge",
        "valid",
    ],
)
async def test_authorize_errors_after_the_redirect_is_known_redirect_with_state(
    start_emulator: Any, params: dict[str, str | None], error: str | None, fragment: str | None
) -> None:
    running = await start_emulator(SEED_WITH_ODD_CLIENTS)
    client_id = params.get("client_id") or "narrow"
    redirect_uri = (
        "http://127.0.0.1:4321/cb"
        if client_id == "service-only"
        else ("https://app.example.com/cb")
    )
    request: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "api:admin-read",
        "state": "xyz",
        "code_challenge": challenge_of(VERIFIER),
        "code_challenge_method": "S256",
    }
    request.update(params)
    sent = {key: value for key, value in request.items() if value is not None}
    async with running.client() as client:
        response = await client.get(AUTHORIZE, params=sent)
    if error is None:
        assert response.status_code == 200
        return
    assert response.status_code == 302, response.text
    assert response.headers["location"].startswith(redirect_uri + "?")
    query = query_of(response)
    assert query["error"] == error
    assert fragment is not None
    assert fragment in query["error_description"]
    assert query["state"] == sent["state"]


async def test_a_single_registered_redirect_uri_is_the_default(start_emulator: Any) -> None:
    running = await start_emulator(SEED_WITH_ODD_CLIENTS)
    params = {"response_type": "code", "client_id": "narrow", "state": "st"}
    async with running.client() as client:
        assert (await client.get(AUTHORIZE, params=params)).status_code == 200
        response = await client.post(CALLBACK, data={**params, "username": "jane"})
        assert response.headers["location"].startswith("https://app.example.com/cb?code=")
        # Not named at authorize, so it need not be repeated at the token endpoint.
        tokens = await client.post(
            TOKEN,
            data={"grant_type": "authorization_code", "code": query_of(response)["code"]},
            auth=("narrow", "narrow-secret"),
        )
    assert tokens.status_code == 200, tokens.text
    # No scope asked: the client's allowed scopes.
    assert tokens.json()["scope"] == "api:admin-read"
    assert "refresh_token" not in tokens.json()


async def test_public_client_must_use_pkce(emulator: Any) -> None:
    async with emulator.client() as client:
        params = cli_params(code_challenge=None, code_challenge_method=None)
        response = await client.get(AUTHORIZE, params=params)
    assert response.status_code == 302
    query = query_of(response)
    assert query["error"] == "invalid_request"
    assert "PKCE is required" in query["error_description"]


async def test_loopback_redirect_uris_match_any_port(emulator: Any) -> None:
    async with emulator.client() as client:
        for uri in (
            "http://127.0.0.1:1/callback",
            "http://127.0.0.1:65535/callback/",
            "http://localhost:40000/callback",
            "http://127.0.0.1/callback",
        ):
            response = await client.get(AUTHORIZE, params=cli_params(redirect_uri=uri))
            assert response.status_code == 200, (uri, response.text)


def test_redirect_uri_matching_table() -> None:
    cases = [
        ("http://127.0.0.1/cb", "http://127.0.0.1:5000/cb", True),
        ("http://[::1]/cb", "http://[::1]:5000/cb", True),
        ("http://localhost/cb", "http://127.0.0.1:5000/cb", False),
        ("https://app.example.com/cb", "https://app.example.com/cb/", True),
        ("https://app.example.com/cb", "https://APP.example.com:443/cb", True),
        ("https://app.example.com/cb", "https://app.example.com:8443/cb", False),
        ("https://app.example.com/cb?a=1", "https://app.example.com/cb?a=2", False),
        ("https://app.example.com/cb", "http://app.example.com/cb", False),
        ("com.example.app:/oauth", "com.example.app:/oauth/", True),
        ("com.example.app:/oauth", "com.example.app:/other", False),
    ]
    for registered, given, expected in cases:
        assert redirect_uri_matches(registered, given) is expected, (registered, given)


def test_code_state_machine_refuses_illegal_transitions() -> None:
    from emulator.foundry.core.oauth import AuthorizationCode, CodeEvent

    code = AuthorizationCode(
        client_id="c",
        username="u",
        redirect_uri="http://127.0.0.1/cb",
        redirect_uri_given=True,
        scopes=(),
        code_challenge=None,
        code_challenge_method=None,
        issued_at=0.0,
        expires_at=600.0,
    )
    apply_code_event(code, CodeEvent.REDEEM)
    assert code.state is CodeState.REDEEMED
    with pytest.raises(IllegalTransition):
        apply_code_event(code, CodeEvent.VOID)
    assert code.state is CodeState.REDEEMED


def test_development_client_allows_every_grant() -> None:
    client = OAuthClient.for_development("anything")
    assert client.development
    assert not client.confidential
    assert all(client.allows_grant(g) for g in ("authorization_code", "client_credentials"))


# Authorization code, PKCE, refresh -------------------------------------------------------------


async def test_code_flow_with_pkce_s256_refresh_rotation(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        assert tokens["token_type"] == "Bearer"
        assert tokens["expires_in"] == 3600
        assert tokens["scope"] == "api:admin-read offline_access"
        assert tokens["refresh_token"].startswith("foundry_refresh_")
        me = await current_user(client, tokens["access_token"])
        assert me.status_code == 200
        assert me.json()["username"] == "jane"

        refreshed = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
            },
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.headers["cache-control"] == "no-store"
        assert refreshed.headers["pragma"] == "no-cache"
        second = refreshed.json()
        assert second["refresh_token"] != tokens["refresh_token"]
        assert second["access_token"] != tokens["access_token"]
        assert second["scope"] == "api:admin-read offline_access"
        assert (await current_user(client, second["access_token"])).status_code == 200
        # Rotation: the old refresh token stops working.
        again = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
            },
        )
        body = assert_oauth_error(again, 400, "invalid_grant")
        assert "already used" in body["error_description"]
        # Reuse of a rotated token revokes the grant (RFC 9700 section 4.14.2).
        assert (await current_user(client, second["access_token"])).status_code == 401
        newest = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": second["refresh_token"],
            },
        )
        assert_oauth_error(newest, 400, "invalid_grant")


async def test_pkce_plain_is_supported(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(
            client, cli_params(code_challenge=VERIFIER, code_challenge_method="plain")
        )
        response = await exchange(client, code)
        assert response.status_code == 200, response.text


async def test_pkce_method_defaults_to_plain(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(
            client, cli_params(code_challenge=VERIFIER, code_challenge_method=None)
        )
        assert (await exchange(client, code)).status_code == 200


async def test_code_is_single_use_and_reuse_revokes_its_tokens(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(client, cli_params())
        first = await exchange(client, code)
        assert first.status_code == 200
        tokens = first.json()
        second = await exchange(client, code)
        body = assert_oauth_error(second, 400, "invalid_grant")
        assert "already used" in body["error_description"]
        assert (await current_user(client, tokens["access_token"])).status_code == 401
        refresh = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
            },
        )
        assert_oauth_error(refresh, 400, "invalid_grant")


async def test_code_expires(start_emulator: Any) -> None:
    clock = ManualClock()
    running = await start_emulator(None, clock=clock)
    async with running.client() as client:
        code = await sign_in(client, cli_params())
        clock.advance(600)
        body = assert_oauth_error(await exchange(client, code), 400, "invalid_grant")
        assert "expired" in body["error_description"]
        fresh = await sign_in(client, cli_params())
        clock.advance(599)
        assert (await exchange(client, fresh)).status_code == 200


@pytest.mark.parametrize(
    ("fields", "status", "error", "fragment"),
    [
        ({"redirect_uri": "http://127.0.0.1:9999/callback"}, 400, "invalid_grant", "redirect"),
        ({"redirect_uri": "<omit>"}, 400, "invalid_request", "redirect_uri"),
        ({"code_verifier": "w" * 50}, 400, "invalid_grant", "PKCE verification failed"),
        ({"code_verifier": "<omit>"}, 400, "invalid_grant", "code_verifier"),
        ({"code_verifier": "bad verifier"}, 400, "invalid_grant", "43 to 128"),
    ],
    ids=["redirect-mismatch", "redirect-missing", "pkce-mismatch", "no-verifier", "bad-verifier"],
)
async def test_failed_exchange_voids_the_code(
    emulator: Any, fields: dict[str, str], status: int, error: str, fragment: str
) -> None:
    async with emulator.client() as client:
        code = await sign_in(client, cli_params())
        body = assert_oauth_error(await exchange(client, code, **fields), status, error)
        assert fragment in body["error_description"]
        # A code that failed once cannot be retried, even with the right values.
        retry = assert_oauth_error(await exchange(client, code), 400, "invalid_grant")
        assert "no longer valid" in retry["error_description"]


async def test_code_is_bound_to_its_client(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(client, web_params())
        stolen = await exchange(client, code, redirect_uri=WEB_REDIRECT, code_verifier="<omit>")
        body = assert_oauth_error(stolen, 400, "invalid_grant")
        assert "another client" in body["error_description"]


async def test_confidential_client_code_flow_with_basic_auth(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(client, web_params())
        without_secret = await client.post(
            TOKEN,
            data={
                "grant_type": "authorization_code",
                "client_id": "foundry-web",
                "code": code,
                "redirect_uri": WEB_REDIRECT,
            },
        )
        assert_oauth_error(without_secret, 401, "invalid_client")
        # The failed client authentication did not touch the code.
        response = await client.post(
            TOKEN,
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": WEB_REDIRECT},
            auth=("foundry-web", "foundry-web-secret"),
        )
        assert response.status_code == 200, response.text
        assert "refresh_token" in response.json()


async def test_verifier_without_challenge_is_refused(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(client, web_params())
        response = await exchange(
            client,
            code,
            client_id="foundry-web",
            client_secret="foundry-web-secret",
            redirect_uri=WEB_REDIRECT,
        )
        body = assert_oauth_error(response, 400, "invalid_grant")
        assert "no code_challenge" in body["error_description"]


async def test_no_refresh_token_without_offline_access(emulator: Any) -> None:
    async with emulator.client() as client:
        code = await sign_in(client, cli_params(scope="api:admin-read"))
        tokens = (await exchange(client, code)).json()
    assert "refresh_token" not in tokens
    assert tokens["scope"] == "api:admin-read"


async def test_refresh_may_narrow_but_not_widen_the_scope(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        wider = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
                "scope": "api:admin-read api:ontologies-write",
            },
        )
        body = assert_oauth_error(wider, 400, "invalid_scope")
        assert "api:ontologies-write" in body["error_description"]
        narrower = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
                "scope": "offline_access",
            },
        )
        assert narrower.status_code == 200, narrower.text
        narrowed = narrower.json()
        assert narrowed["scope"] == "offline_access"
        denied = await current_user(client, narrowed["access_token"])
        assert denied.status_code == 403
        # The grant keeps its scopes: the next refresh gives them all again.
        full = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": narrowed["refresh_token"],
            },
        )
        assert full.json()["scope"] == "api:admin-read offline_access"


async def test_refresh_token_of_another_client_is_refused(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        response = await client.post(
            TOKEN,
            data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            auth=("foundry-web", "foundry-web-secret"),
        )
        body = assert_oauth_error(response, 400, "invalid_grant")
        assert "another client" in body["error_description"]


async def test_refresh_tokens_expire_when_the_seed_says_so(start_emulator: Any) -> None:
    clock = ManualClock()
    seed = default_seed_with(oauth={"refresh_token_ttl": 100})
    running = await start_emulator(seed, clock=clock)
    async with running.client() as client:
        tokens = await cli_tokens(client)
        clock.advance(100)
        response = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
            },
        )
        body = assert_oauth_error(response, 400, "invalid_grant")
        assert "expired" in body["error_description"]


# Client credentials ----------------------------------------------------------------------------


async def test_client_credentials_with_form_fields(emulator: Any) -> None:
    async with emulator.client() as client:
        response = await client.post(
            TOKEN,
            data={
                "grant_type": "client_credentials",
                "client_id": "foundry-service",
                "client_secret": "foundry-service-secret",
                "scope": "api:admin-read offline_access",
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert "refresh_token" not in body
        # offline_access means nothing without a refresh token; the granted scope says so.
        assert body["scope"] == "api:admin-read"
        user = (await current_user(client, body["access_token"])).json()
    assert user["username"] == "foundry-service"
    assert user["status"] == "ACTIVE"
    assert "organization" not in user


async def test_client_credentials_reuse_one_service_principal(emulator: Any) -> None:
    async with emulator.client() as client:
        ids = set()
        for _ in range(2):
            response = await client.post(
                TOKEN,
                data={"grant_type": "client_credentials"},
                auth=("foundry-service", "foundry-service-secret"),
            )
            assert response.status_code == 200
            # No scope asked: the client's default scopes (all the emulator knows).
            assert "api:admin-read" in response.json()["scope"]
            assert "offline_access" not in response.json()["scope"]
            me = await current_user(client, response.json()["access_token"])
            ids.add(me.json()["id"])
    assert len(ids) == 1


async def test_client_credentials_never_becomes_a_human(start_emulator: Any) -> None:
    seed = {
        "foundry": {
            "users": [{"username": "robot", "display_name": "A human called robot"}],
            "oauth_clients": [
                {
                    "client_id": "robot",
                    "client_secret": "robot-secret",
                    "grant_types": ["client_credentials"],
                }
            ],
        }
    }
    running = await start_emulator(seed)
    async with running.client() as client:
        response = await client.post(
            TOKEN, data={"grant_type": "client_credentials"}, auth=("robot", "robot-secret")
        )
    body = assert_oauth_error(response, 400, "unauthorized_client")
    assert "belongs to another principal" in body["error_description"]


async def test_client_credentials_scope_must_be_allowed(start_emulator: Any) -> None:
    seed = {
        "foundry": {
            "oauth_clients": [
                {
                    "client_id": "svc",
                    "client_secret": "svc-secret",
                    "grant_types": ["client_credentials"],
                    "allowed_scopes": ["api:ontologies-read"],
                }
            ]
        }
    }
    running = await start_emulator(seed)
    async with running.client() as client:
        refused = await client.post(
            TOKEN,
            data={"grant_type": "client_credentials", "scope": "api:admin-read offline_access"},
            auth=("svc", "svc-secret"),
        )
        body = assert_oauth_error(refused, 400, "invalid_scope")
        assert "api:admin-read" in body["error_description"]
        allowed = await client.post(
            TOKEN,
            data={"grant_type": "client_credentials", "scope": "api:ontologies-read"},
            auth=("svc", "svc-secret"),
        )
        assert allowed.json()["scope"] == "api:ontologies-read"


# Client authentication and request format ------------------------------------------------------


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.mark.parametrize(
    ("data", "headers", "status", "error", "fragment"),
    [
        ({"grant_type": "client_credentials"}, {}, 401, "invalid_client", "No client auth"),
        (
            {"grant_type": "client_credentials", "client_id": "foundry-service"},
            {},
            401,
            "invalid_client",
            "confidential",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "foundry-service",
                "client_secret": "wrong",
            },
            {},
            401,
            "invalid_client",
            "incorrect",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
            {},
            401,
            "invalid_client",
            "No OAuth client 'nobody'",
        ),
        (
            {
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "client_secret": "x",
                "refresh_token": "r",
            },
            {},
            401,
            "invalid_client",
            "public client",
        ),
        (
            {"grant_type": "client_credentials", "client_secret": "foundry-service-secret"},
            {"Authorization": basic("foundry-service", "foundry-service-secret")},
            400,
            "invalid_request",
            "one client authentication method",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "foundry-web"},
            {"Authorization": basic("foundry-service", "foundry-service-secret")},
            400,
            "invalid_request",
            "differ",
        ),
        (
            {"grant_type": "client_credentials"},
            {"Authorization": "Basic not-base64!"},
            401,
            "invalid_client",
            "malformed",
        ),
        (
            {"grant_type": "client_credentials"},
            {"Authorization": "Bearer local-token-jane"},
            401,
            "invalid_client",
            "Basic",
        ),
        ({"scope": "api:admin-read"}, {}, 400, "invalid_request", "grant_type"),
        ({"grant_type": "password"}, {}, 400, "unsupported_grant_type", "password"),
        (
            {"grant_type": "authorization_code", "code": "c"},
            {"Authorization": basic("foundry-service", "foundry-service-secret")},
            400,
            "unauthorized_client",
            "authorization_code",
        ),
        (
            {"grant_type": "client_credentials"},
            {"Authorization": basic("foundry-web", "foundry-web-secret")},
            400,
            "unauthorized_client",
            "client_credentials",
        ),
        (
            {"grant_type": "authorization_code", "client_id": "foundry-cli"},
            {},
            400,
            "invalid_request",
            "code parameter",
        ),
        (
            {"grant_type": "authorization_code", "client_id": "foundry-cli", "code": "nope"},
            {},
            400,
            "invalid_grant",
            "not known",
        ),
        (
            {"grant_type": "refresh_token", "client_id": "foundry-cli"},
            {},
            400,
            "invalid_request",
            "refresh_token parameter",
        ),
        (
            {"grant_type": "refresh_token", "client_id": "foundry-cli", "refresh_token": "x"},
            {},
            400,
            "invalid_grant",
            "not known",
        ),
    ],
    ids=[
        "no-client",
        "confidential-without-secret",
        "wrong-secret",
        "unknown-client",
        "public-with-secret",
        "basic-and-form-secret",
        "basic-and-other-form-id",
        "malformed-basic",
        "bearer-instead-of-basic",
        "no-grant-type",
        "unsupported-grant",
        "grant-not-allowed-code",
        "grant-not-allowed-credentials",
        "no-code",
        "unknown-code",
        "no-refresh-token",
        "unknown-refresh-token",
    ],
)
async def test_token_endpoint_errors(
    emulator: Any,
    data: dict[str, str],
    headers: dict[str, str],
    status: int,
    error: str,
    fragment: str,
) -> None:
    async with emulator.client() as client:
        response = await client.post(TOKEN, data=data, headers=headers)
    body = assert_oauth_error(response, status, error)
    assert fragment in body["error_description"], body
    assert response.headers["cache-control"] == "no-store"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"grant_type": "client_credentials"}', "application/json"),
        (b"grant_type=client_credentials", None),
        (b"grant_type=client_credentials", "text/plain"),
    ],
    ids=["json", "none", "text"],
)
async def test_token_endpoint_needs_a_form(
    emulator: Any, content: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with emulator.client() as client:
        response = await client.post(TOKEN, content=content, headers=headers)
    body = assert_oauth_error(response, 400, "invalid_request")
    assert "application/x-www-form-urlencoded" in body["error_description"]


async def test_repeated_token_parameters_are_refused(emulator: Any) -> None:
    async with emulator.client() as client:
        response = await client.post(
            TOKEN,
            content=b"grant_type=client_credentials&scope=a&scope=b",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": basic("foundry-service", "foundry-service-secret"),
            },
        )
    body = assert_oauth_error(response, 400, "invalid_request")
    assert "scope" in body["error_description"]


async def test_hostile_input_never_causes_a_500(emulator: Any) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    async with emulator.client() as client:
        answers = [
            await client.post(TOKEN, content=b"\xff\xfe=\x00", headers=form),
            await client.post(TOKEN, content=b"%%%=&&==", headers=form),
            await client.post(TOKEN, content=b"a" * 70_000, headers=form),
            await client.post(REVOKE, content=b"\xff", headers=form),
            await client.post(CALLBACK, content=b"\xff", headers=form),
            await client.post(CALLBACK, content=b"client_id=%ff", headers=form),
            await client.post(CALLBACK, json={"client_id": "foundry-cli"}),
            await client.get(AUTHORIZE + "?client_id=%ff%fe&redirect_uri=%00"),
            await client.get(AUTHORIZE + "?client_id=foundry-cli&redirect_uri=http://[::1"),
            await client.post(
                TOKEN,
                data={"grant_type": "client_credentials"},
                headers={"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()},
            ),
            await client.get(AUTHORIZE, params={**cli_params(), "scope": "x" * 10_000 + " \u00e9"}),
            await client.get(TOKEN),
        ]
    for response in answers:
        # 302: the malformed scope is reported to the (valid) redirect URI.
        assert response.status_code in (302, 400, 401, 405, 413), (
            response.status_code,
            response.text[:200],
        )


# Expiry, revocation, reset ---------------------------------------------------------------------


def default_seed_with(**oauth_block: Any) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_seed_path().read_text(encoding="utf-8"))
    data["foundry"].update(oauth_block)
    return data


async def test_access_tokens_expire_after_the_seed_ttl(start_emulator: Any) -> None:
    clock = ManualClock()
    running = await start_emulator(default_seed_with(oauth={"access_token_ttl": 120}), clock=clock)
    async with running.client() as client:
        response = await client.post(
            TOKEN,
            data={"grant_type": "client_credentials"},
            auth=("foundry-service", "foundry-service-secret"),
        )
        body = response.json()
        assert body["expires_in"] == 120
        clock.advance(119)
        assert (await current_user(client, body["access_token"])).status_code == 200
        clock.advance(1)
        expired = await current_user(client, body["access_token"])
        assert expired.status_code == 401
        assert expired.json()["errorName"] == "InvalidCredentials"
        assert "expired" in expired.json()["errorDescription"]
        me = await client.get(
            "/multipass/api/me", headers={"Authorization": f"Bearer {body['access_token']}"}
        )
        assert_oauth_error(me, 401, "invalid_token")


async def test_revoking_an_access_token_ends_the_sign_in(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        response = await client.post(
            REVOKE, data={"client_id": "foundry-cli", "token": tokens["access_token"]}
        )
        assert response.status_code == 200
        assert response.content == b""
        assert (await current_user(client, tokens["access_token"])).status_code == 401
        refresh = await client.post(
            TOKEN,
            data={
                "grant_type": "refresh_token",
                "client_id": "foundry-cli",
                "refresh_token": tokens["refresh_token"],
            },
        )
        body = assert_oauth_error(refresh, 400, "invalid_grant")
        assert "revoked" in body["error_description"]
        # Revoking again, or revoking a made-up token, is fine (RFC 7009 section 2.2).
        for token in (tokens["access_token"], "never-issued"):
            again = await client.post(REVOKE, data={"client_id": "foundry-cli", "token": token})
            assert again.status_code == 200


async def test_revoking_a_refresh_token_revokes_its_access_tokens(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        response = await client.post(
            REVOKE,
            data={
                "client_id": "foundry-cli",
                "token": tokens["refresh_token"],
                "token_type_hint": "refresh_token",
            },
        )
        assert response.status_code == 200
        assert (await current_user(client, tokens["access_token"])).status_code == 401


async def test_revocation_checks_the_client(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        other = await client.post(
            REVOKE,
            data={"token": tokens["access_token"]},
            auth=("foundry-web", "foundry-web-secret"),
        )
        body = assert_oauth_error(other, 400, "unauthorized_client")
        assert "not issued to client 'foundry-web'" in body["error_description"]
        unauthenticated = await client.post(
            REVOKE, data={"client_id": "foundry-web", "token": tokens["access_token"]}
        )
        assert_oauth_error(unauthenticated, 401, "invalid_client")
        missing = await client.post(REVOKE, data={"client_id": "foundry-cli"})
        assert_oauth_error(missing, 400, "invalid_request")
        assert (await current_user(client, tokens["access_token"])).status_code == 200


async def test_client_credentials_token_revocation(emulator: Any) -> None:
    async with emulator.client() as client:
        data = {
            "client_id": "foundry-service",
            "client_secret": "foundry-service-secret",
        }
        token = (
            await client.post(TOKEN, data={**data, "grant_type": "client_credentials"})
        ).json()["access_token"]
        assert (await client.post(REVOKE, data={**data, "token": token})).status_code == 200
        assert (await current_user(client, token)).status_code == 401


async def test_reset_forgets_issued_tokens(emulator: Any) -> None:
    async with emulator.client() as client:
        tokens = await cli_tokens(client)
        assert (await client.post("/_emulate/reset")).status_code == 200
        assert (await current_user(client, tokens["access_token"])).status_code == 401
        assert (await current_user(client, "local-token-jane")).status_code == 200


async def test_made_up_tokens_never_authenticate(emulator: Any) -> None:
    async with emulator.client() as client:
        for token in ("made-up", "foundry_" + "x" * 40, "local-token-jane "):
            response = await client.get(GET_CURRENT, headers={"Authorization": f"Bearer {token}x"})
            assert response.status_code == 401


# Development mode ------------------------------------------------------------------------------


async def test_development_mode_accepts_any_client(start_emulator: Any) -> None:
    running = await start_emulator({"foundry": {"users": [{"username": "dev"}]}})
    async with running.client() as client:
        params = {
            "response_type": "code",
            "client_id": "whatever-app",
            "redirect_uri": "http://127.0.0.1:9000/anything",
            "scope": "api:admin-read offline_access custom:scope",
            "state": "s1",
        }
        page = await client.get(AUTHORIZE, params=params)
        assert page.status_code == 200
        assert "Development mode" in page.text
        code = await sign_in(client, params, username="dev")
        response = await client.post(
            TOKEN,
            data={
                "grant_type": "authorization_code",
                "client_id": "whatever-app",
                "client_secret": "not checked",
                "code": code,
                "redirect_uri": "http://127.0.0.1:9000/anything",
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "api:admin-read offline_access custom:scope"
        # Still bound to the client id that obtained it.
        code = await sign_in(client, params, username="dev")
        response = await client.post(
            TOKEN,
            data={"grant_type": "authorization_code", "client_id": "other-app", "code": code},
        )
        assert_oauth_error(response, 400, "invalid_grant")
        service = await client.post(
            TOKEN, data={"grant_type": "client_credentials", "client_id": "any-service"}
        )
        assert service.status_code == 200
        no_redirect = await client.get(AUTHORIZE, params={**params, "redirect_uri": ""})
        assert no_redirect.status_code == 400


async def test_picked_user_must_be_an_active_human(emulator: Any) -> None:
    async with emulator.client() as client:
        for username in ("carol", "nobody", ""):
            response = await client.post(CALLBACK, data={**cli_params(), "username": username})
            assert response.status_code == 400
            assert "location" not in response.headers
            assert "Choose another user" in response.text
            assert 'href="/multipass/api/oauth2/authorize?response_type=code' in response.text


# Secrets stay secret ---------------------------------------------------------------------------


async def test_no_secret_is_logged_or_kept_in_the_request_log(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with emulator.client() as client:
        code = await sign_in(client, cli_params())
        tokens = (await exchange(client, code)).json()
        service = await client.post(
            TOKEN,
            data={"grant_type": "client_credentials"},
            auth=("foundry-service", "foundry-service-secret"),
        )
        await client.post(
            REVOKE, data={"client_id": "foundry-cli", "token": tokens["access_token"]}
        )
        request_log = (await client.get("/_emulate/requests")).text
        state = (await client.get("/_emulate/state")).text
    secrets = [
        code,
        tokens["access_token"],
        tokens["refresh_token"],
        service.json()["access_token"],
        "foundry-service-secret",
        VERIFIER,
    ]
    # Only the emulator's own lines (the test's httpx client logs what it sends and receives).
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    assert "issued tokens for grant client_credentials to client foundry-service" in logged
    assert "client_secret_basic" in logged
    for secret in secrets:
        assert secret not in logged
        assert secret not in request_log
        assert secret not in state


# The core, synchronously -----------------------------------------------------------------------


def core_server(now: float = 1000.0) -> OAuthServer:
    seed = seed_from_mapping(
        yaml.safe_load(default_seed_path().read_text(encoding="utf-8")), registered_services()
    )
    foundry = seed.blocks["foundry"]
    identity = Identity.from_seed(foundry, now)
    return OAuthServer.from_seed(foundry, identity.directory, identity.tokens, Randomness())


def core_request(server: OAuthServer) -> AuthorizationRequest:
    params = AuthorizeParams.from_pairs(cli_params().items())
    return server.check_authorization(server.authorization_target(params), params)


def test_core_caps_outstanding_codes_without_changing_state() -> None:
    server = core_server()
    server.max_live_codes = 2
    request = core_request(server)
    for _ in range(2):
        server.issue_code(request, "jane", 1000.0)
    with pytest.raises(OAuthError) as caught:
        server.issue_code(request, "jane", 1000.0)
    assert caught.value.code == "temporarily_unavailable"
    assert len(server.codes) == 2


def test_core_prune_forgets_expired_codes_and_spent_grants() -> None:
    server = core_server()
    request = core_request(server)
    client = server.clients.find("foundry-cli")
    assert client is not None
    code = server.issue_code(request, "jane", 1000.0)
    issued = server.exchange_code(client, code, CLI_REDIRECT, VERIFIER, 1000.0)
    server.issue_code(request, "bob", 1000.0)
    assert issued.refresh_token is not None
    server.revoke(client, issued.refresh_token)
    server.prune(1000.0 + 600, force=True)
    assert server.codes == {}
    assert server.grants == {}
    assert server.refresh_tokens == {}


def test_core_failed_refresh_leaves_the_token_usable() -> None:
    server = core_server()
    client = server.clients.find("foundry-cli")
    assert client is not None
    code = server.issue_code(core_request(server), "jane", 1000.0)
    issued = server.exchange_code(client, code, CLI_REDIRECT, VERIFIER, 1000.0)
    with pytest.raises(OAuthError) as caught:
        server.refresh(client, issued.refresh_token, "api:ontologies-write", 1001.0)
    assert caught.value.code == "invalid_scope"
    again = server.refresh(client, issued.refresh_token, None, 1002.0)
    assert again.refresh_token not in (None, issued.refresh_token)


def test_core_user_must_be_an_active_human() -> None:
    server = core_server()
    request = core_request(server)
    for username in ("carol", "nobody", None):
        with pytest.raises(NotFound):
            server.issue_code(request, username, 1000.0)
    assert server.codes == {}


async def test_contour_auth_follows_a_reset(emulator) -> None:  # type: ignore[no-untyped-def]
    """Bearer checks built with the blueprints read the identity of the current state."""
    async with emulator.client() as client:
        token = emulator.foundry.identity.tokens.issue(
            emulator.foundry.context.randomness,
            username="jane",
            scopes=(),
            client_id=None,
            ttl=60,
            now=emulator.foundry.context.clock.now(),
            origin="test",
        )[0]
        status_path = "/contour-backend-multiplexer/api/module-group-multiplexer/jobs/nope/status"
        before = await client.get(status_path, headers={"Authorization": f"Bearer {token}"})
        assert before.status_code == 404
        assert (await client.post("/_emulate/reset")).status_code == 200
        after = await client.get(status_path, headers={"Authorization": f"Bearer {token}"})
        assert after.status_code == 401
        seeded = await client.get(status_path, headers={"Authorization": "Bearer local-token-jane"})
        assert seeded.status_code == 404
