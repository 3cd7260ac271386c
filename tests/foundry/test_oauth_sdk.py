"""The real, unmodified foundry-platform-sdk and foundry-dev-tools against the emulator.

Plain HTTP runs the libraries in a worker thread with `Config(scheme="http")` (the SDK) and
`Host(..., "http")` (foundry-dev-tools). HTTPS runs them in a subprocess whose environment trusts
the emulator's CA through SSL_CERT_FILE or REQUESTS_CA_BUNDLE, as an unchangeable caller would.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

import pytest
import trio
from foundry_dev_tools import Config as DevToolsConfig
from foundry_dev_tools import FoundryContext, Host, JWTTokenProvider, OAuthTokenProvider
from foundry_dev_tools.helpers.multipass import User as DevToolsUser
from foundry_sdk import (
    ConfidentialClientAuth,
    Config,
    FoundryClient,
    PermissionDeniedError,
    UnauthorizedError,
    UserTokenAuth,
)
from foundry_sdk.v2.admin.errors import (
    GetCurrentEnrollmentPermissionDenied,
    GetCurrentUserPermissionDenied,
)

SERVICE_ID = "foundry-service"
SERVICE_SECRET = "foundry-service-secret"


def host_of(url: str) -> str:
    return url.split("://", 1)[1]


def sdk_client(running: Any, auth: Any) -> FoundryClient:
    return FoundryClient(
        auth=auth, hostname=host_of(running.http_url), config=Config(scheme="http", timeout=20)
    )


async def test_confidential_client_auth_reads_the_service_user(emulator: Any) -> None:
    def run() -> tuple[Any, Any, str]:
        auth = ConfidentialClientAuth(SERVICE_ID, SERVICE_SECRET, scopes=["api:admin-read"])
        client = sdk_client(emulator, auth)
        user = client.admin.User.get_current()
        enrollment = client.admin.Enrollment.get_current(preview=True)
        token = auth.get_token().access_token
        auth.sign_out()  # revokes the token and stops the SDK's refresh thread
        return user, enrollment, token

    with trio.fail_after(30):
        user, enrollment, token = await trio.to_thread.run_sync(run)
    assert user.username == SERVICE_ID
    assert user.status == "ACTIVE"
    assert user.organization is None
    assert enrollment.rid == "ri.enrollment..enrollment.default"
    async with emulator.client() as client:
        after = await client.get(
            "/api/v2/admin/users/getCurrent", headers={"Authorization": f"Bearer {token}"}
        )
    assert after.status_code == 401


async def test_user_token_auth_with_a_seeded_token(emulator: Any) -> None:
    def run() -> tuple[Any, Any]:
        client = sdk_client(emulator, UserTokenAuth("local-token-jane"))
        return client.admin.User.get_current(), client.admin.Enrollment.get_current(preview=True)

    with trio.fail_after(30):
        user, enrollment = await trio.to_thread.run_sync(run)
    assert user.username == "jane"
    assert user.given_name == "Jane"
    assert user.family_name == "Smith"
    assert user.email == "jane@example.com"
    assert user.organization == "ri.organization.main.organization.default"
    assert user.attributes["department"] == ["Finance"]
    assert enrollment.name == "Local Enrollment"
    assert enrollment.created_time is not None
    assert enrollment.created_time.tzinfo is not None


async def test_missing_scope_raises_the_typed_sdk_errors(emulator: Any) -> None:
    def run() -> list[Exception]:
        client = sdk_client(emulator, UserTokenAuth("local-token-bob"))
        raised: list[Exception] = []
        # The SDK warns when an error body lacks a field it needs; make that a failure.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for call in (
                client.admin.User.get_current,
                lambda: client.admin.Enrollment.get_current(preview=True),
            ):
                try:
                    call()
                except PermissionDeniedError as error:
                    raised.append(error)
        return raised

    with trio.fail_after(30):
        raised = await trio.to_thread.run_sync(run)
    assert [type(error) for error in raised] == [
        GetCurrentUserPermissionDenied,
        GetCurrentEnrollmentPermissionDenied,
    ]
    assert raised[0].parameters == {}


async def test_unknown_token_is_unauthorized(emulator: Any) -> None:
    def run() -> None:
        sdk_client(emulator, UserTokenAuth("not-a-real-token")).admin.User.get_current()

    with trio.fail_after(30):
        with pytest.raises(UnauthorizedError):
            await trio.to_thread.run_sync(run)


async def test_sdk_scopes_with_offline_access_work_for_the_default_web_client(
    emulator: Any,
) -> None:
    """The SDK appends offline_access to every scope list; foundry-web allows it."""
    async with emulator.client() as client:
        response = await client.get(
            "/multipass/api/oauth2/authorize",
            params={
                "response_type": "code",
                "client_id": "foundry-web",
                "redirect_uri": "http://localhost:3000/callback",
                "scope": "api:admin-read offline_access",
                "state": "s",
            },
        )
    assert response.status_code == 200


async def test_dev_tools_client_credentials_with_basic_then_user_me(
    emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="emulator")

    def run() -> Any:
        provider = OAuthTokenProvider(
            host=Host(host_of(emulator.http_url), "http"),
            client_id=SERVICE_ID,
            client_secret=SERVICE_SECRET,
            grant_type="client_credentials",
            scopes=["api:admin-read"],
        )
        context = FoundryContext(config=DevToolsConfig(), token_provider=provider)
        return DevToolsUser.me(context)

    with trio.fail_after(30):
        me = await trio.to_thread.run_sync(run)
    assert me.username == SERVICE_ID
    assert me.attributes == {"multipass:realm": ["palantir-internal-realm"]}
    assert "client foundry-service (client authentication: client_secret_basic)" in caplog.text


async def test_dev_tools_user_me_with_a_seeded_token(emulator: Any) -> None:
    def run() -> Any:
        provider = JWTTokenProvider(
            host=Host(host_of(emulator.http_url), "http"), jwt="local-token-bob"
        )
        return DevToolsUser.me(FoundryContext(config=DevToolsConfig(), token_provider=provider))

    with trio.fail_after(30):
        me = await trio.to_thread.run_sync(run)
    assert me.username == "bob"
    assert me.attributes["department"] == ["Engineering"]


# HTTPS: a subprocess that trusts the emulator's CA only through its environment ----------------

HTTPS_SCRIPT = r"""
import json, os, sys
from foundry_sdk import (ConfidentialClientAuth, Config, ConnectionError, FoundryClient,
                         UserTokenAuth)
from foundry_sdk.v2.admin.errors import GetCurrentUserPermissionDenied

host, variable = sys.argv[1], sys.argv[2]
out = {}
client = FoundryClient(auth=UserTokenAuth("local-token-jane"), hostname=host)
out["user"] = client.admin.User.get_current().username
out["enrollment"] = client.admin.Enrollment.get_current(preview=True).created_time.isoformat()
auth = ConfidentialClientAuth(
    "foundry-service", "foundry-service-secret", scopes=["api:admin-read"]
)
out["service"] = FoundryClient(auth=auth, hostname=host).admin.User.get_current().username
auth.sign_out()
try:
    FoundryClient(auth=UserTokenAuth("local-token-bob"), hostname=host).admin.User.get_current()
except GetCurrentUserPermissionDenied as error:
    out["bob"] = error.name
if variable == "REQUESTS_CA_BUNDLE":
    from foundry_dev_tools import Config, FoundryContext, Host, JWTTokenProvider
    from foundry_dev_tools.helpers.multipass import User
    provider = JWTTokenProvider(host=Host(host, "https"), jwt="local-token-jane")
    out["dev_tools"] = User.me(FoundryContext(config=Config(), token_provider=provider)).username
# Without the variable the emulator's certificate is not trusted: the CA really came from it.
del os.environ[variable]
try:
    FoundryClient(auth=UserTokenAuth("local-token-jane"), hostname=host).admin.User.get_current()
    out["untrusted"] = "connected"
except ConnectionError:
    out["untrusted"] = "refused"
print(json.dumps(out))
"""


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
async def test_sdk_over_https_trusting_the_emulator_ca(emulator: Any, variable: str) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    }
    environment[variable] = str(emulator.ca_path)
    host = "localhost:" + emulator.https_url.rsplit(":", 1)[1]
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-c", HTTPS_SCRIPT, host, variable],
            env=environment,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["user"] == "jane"
    assert out["service"] == SERVICE_ID
    assert out["bob"] == "GetCurrentUserPermissionDenied"
    assert out["enrollment"].endswith("+00:00")
    assert out["untrusted"] == "refused"
    if variable == "REQUESTS_CA_BUNDLE":
        assert out["dev_tools"] == "jane"
