"""Admin identity over real HTTP: getCurrent (user and enrollment) and /multipass/api/me, with
seeded tokens, scopes, inactive users and service principals; HTTP/1.1, h2c and HTTP/2 over TLS."""

from __future__ import annotations

import datetime
import re
import uuid
from typing import Any

import pytest
import yaml

from emulator.platform.clock import ManualClock
from emulator.platform.seeds import default_seed_path

GET_USER = "/api/v2/admin/users/getCurrent"
GET_ENROLLMENT = "/api/v2/admin/enrollments/getCurrent"
ME = "/multipass/api/me"
JANE = {"Authorization": "Bearer local-token-jane"}
BOB = {"Authorization": "Bearer local-token-bob"}
RID = re.compile(r"^ri\.[a-z][a-z0-9-]*\.([a-z0-9][a-z0-9\-]*)?\.[a-z][a-z0-9-]*\.[a-zA-Z0-9._-]+$")


@pytest.mark.parametrize(
    ("tls", "http2"), [(False, False), (False, True), (True, True)], ids=["h1", "h2c", "h2-tls"]
)
async def test_get_current_user_is_the_sdk_user_model(
    emulator: Any, tls: bool, http2: bool
) -> None:
    async with emulator.client(tls=tls, http2=http2) as client:
        response = await client.get(GET_USER, headers=JANE)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    user = response.json()
    assert str(uuid.UUID(user["id"])) == user["id"]
    assert user == {
        "id": user["id"],
        "username": "jane",
        "givenName": "Jane",
        "familyName": "Smith",
        "email": "jane@example.com",
        "realm": "palantir-internal-realm",
        "organization": "ri.organization.main.organization.default",
        "status": "ACTIVE",
        "attributes": {
            "department": ["Finance"],
            "multipass:realm": ["palantir-internal-realm"],
            "multipass:givenName": ["Jane"],
            "multipass:familyName": ["Smith"],
            "multipass:email:primary": ["jane@example.com"],
            "multipass:organization-rid": ["ri.organization.main.organization.default"],
        },
    }
    assert RID.match(user["organization"])


async def test_the_user_id_is_stable_across_restarts(start_emulator: Any) -> None:
    ids = []
    for _ in range(2):
        running = await start_emulator()
        async with running.client() as client:
            ids.append((await client.get(GET_USER, headers=JANE)).json()["id"])
    assert ids[0] == ids[1]


async def test_missing_scope_is_the_sdk_permission_error(emulator: Any) -> None:
    async with emulator.client() as client:
        user = await client.get(GET_USER, headers=BOB)
        enrollment = await client.get(GET_ENROLLMENT, headers=BOB)
    for response, name in (
        (user, "GetCurrentUserPermissionDenied"),
        (enrollment, "GetCurrentEnrollmentPermissionDenied"),
    ):
        assert response.status_code == 403
        body = response.json()
        assert body["errorCode"] == "PERMISSION_DENIED"
        assert body["errorName"] == name
        assert body["parameters"] == {}
        assert uuid.UUID(body["errorInstanceId"])
        assert "api:admin-read" in body["errorDescription"]


@pytest.mark.parametrize(
    ("headers", "error_name"),
    [
        ({}, "MissingCredentials"),
        ({"Authorization": "Bearer made-up-token"}, "InvalidCredentials"),
        ({"Authorization": "Basic amFuZTpzZWNyZXQ="}, "MissingCredentials"),
        ({"Authorization": "Bearer local-token-carol"}, "InvalidCredentials"),
    ],
    ids=["none", "made-up", "basic", "inactive-user"],
)
async def test_bad_credentials_are_401_in_each_family(
    start_emulator: Any, headers: dict[str, str], error_name: str
) -> None:
    seed = _default_seed()
    seed["tokens"]["local-token-carol"] = {"username": "carol", "scopes": ["api:admin-read"]}
    running = await start_emulator(seed)
    async with running.client() as client:
        user = await client.get(GET_USER, headers=headers)
        enrollment = await client.get(GET_ENROLLMENT, headers=headers)
        me = await client.get(ME, headers=headers)
    for response in (user, enrollment):
        assert response.status_code == 401
        assert response.json()["errorName"] == error_name
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert me.status_code == 401
    assert me.json()["error"] == "invalid_token"


async def test_enrollment_has_a_time_zone(start_emulator: Any) -> None:
    clock = ManualClock(current=1_800_000_000.0)
    running = await start_emulator(None, clock=clock)
    async with running.client() as client:
        response = await client.get(GET_ENROLLMENT + "?preview=true", headers=JANE)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "rid": "ri.enrollment..enrollment.default",
        "name": "Local Enrollment",
        "createdTime": "2027-01-15T08:00:00Z",
    }
    parsed = datetime.datetime.fromisoformat(body["createdTime"])
    assert parsed.utcoffset() == datetime.timedelta(0)


async def test_enrollment_from_the_seed(start_emulator: Any) -> None:
    seed = {
        "tokens": {"t": {"username": "u", "scopes": ["api:admin-read"]}},
        "foundry": {
            "users": [{"username": "u"}],
            "enrollment": {
                "rid": "ri.enrollment..enrollment.acme",
                "name": "Acme",
                "created_time": "2024-05-01T09:30:00+02:00",
            },
        },
    }
    running = await start_emulator(seed)
    async with running.client() as client:
        body = (await client.get(GET_ENROLLMENT, headers={"Authorization": "Bearer t"})).json()
    assert body == {
        "rid": "ri.enrollment..enrollment.acme",
        "name": "Acme",
        "createdTime": "2024-05-01T09:30:00+02:00",
    }


async def test_multipass_me_has_exactly_three_keys_and_needs_no_scope(emulator: Any) -> None:
    async with emulator.client() as client:
        jane = (await client.get(ME, headers=JANE)).json()
        bob = await client.get(ME, headers=BOB)
        full = (await client.get(GET_USER, headers=JANE)).json()
    assert set(jane) == {"id", "username", "attributes"}
    assert jane["id"] == full["id"]
    assert jane["username"] == "jane"
    assert jane["attributes"] == full["attributes"]
    assert bob.status_code == 200
    assert bob.json()["username"] == "bob"


async def test_reserved_attributes_win_and_service_principals_have_no_organization(
    start_emulator: Any,
) -> None:
    seed = {
        "tokens": {
            "human": {"username": "ann", "scopes": ["api:admin-read"]},
            "robot": {"username": "svc", "scopes": ["api:admin-read"]},
        },
        "foundry": {
            "users": [
                {
                    "username": "ann",
                    "email": "ann@example.com",
                    "realm": "my-realm",
                    "attributes": {"multipass:email:primary": "other@example.com", "team": "a"},
                },
                {"username": "svc", "principal_type": "service"},
            ]
        },
    }
    running = await start_emulator(seed)
    async with running.client() as client:
        ann = (await client.get(GET_USER, headers={"Authorization": "Bearer human"})).json()
        svc = (await client.get(GET_USER, headers={"Authorization": "Bearer robot"})).json()
    assert ann["attributes"]["multipass:email:primary"] == ["ann@example.com"]
    assert ann["attributes"]["team"] == ["a"]
    assert ann["attributes"]["multipass:realm"] == ["my-realm"]
    assert "givenName" not in ann
    assert "organization" not in svc
    assert svc["attributes"] == {"multipass:realm": ["palantir-internal-realm"]}


async def test_request_log_names_the_principal(emulator: Any) -> None:
    async with emulator.client() as client:
        await client.get(GET_USER, headers=JANE)
        log = (await client.get("/_emulate/requests")).json()["requests"]
    entry = next(item for item in log if item["path"] == GET_USER)
    assert entry["principal"] == "jane"
    assert "local-token-jane" not in str(log)


def _default_seed() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_seed_path().read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("header", ["local-token-jane", "Token local-token-jane", "Bearer"])
async def test_a_token_without_the_bearer_scheme_is_told_the_expected_format(
    emulator: Any, header: str
) -> None:
    async with emulator.client() as client:
        response = await client.get(GET_USER, headers={"Authorization": header})
    assert response.status_code == 401
    body = response.json()
    assert body["errorName"] == "MissingCredentials"
    assert "'Bearer <token>'" in body["errorDescription"]
    # The header is never echoed: without "Bearer " it is usually the token itself.
    assert "local-token-jane" not in response.text
