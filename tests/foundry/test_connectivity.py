"""Connectivity: the core (table-driven, no server) and the HTTP API over real sockets."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml
from emulatorrun import Running, StartEmulator
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.foundry.core.connectivity import (
    ConnectionDraft,
    Connectivity,
    read_secret_update,
)
from emulator.foundry.core.errors import Conflict, InvalidArgument, NotFound
from emulator.foundry.seed import ConnectionSeed, DomainSeed
from emulator.platform.seedschema import Node, SeedError

DEFAULT_SEED = Path(__file__).resolve().parents[2] / "seeds" / "default.yaml"
SEEDED_RID = "ri.magritte..source.00000000-0000-4000-8000-000000000001"
SEEDED_SECRET = "example-secret-value"
JANE = {"Authorization": "Bearer local-token-jane"}
BOB = {"Authorization": "Bearer local-token-bob"}
NOW = 1_800_000_000.0


def create_body(**changes: Any) -> dict[str, Any]:
    """A valid create request (what foundry-platform-sdk sends), with top-level changes."""
    body: dict[str, Any] = {
        "parentFolderRid": "ri.compass.main.folder.4a1b2c3d",
        "displayName": "Weather API",
        "configuration": {
            "type": "rest",
            "domains": [
                {
                    "host": "api.weather.example",
                    "port": 443,
                    "scheme": "HTTPS",
                    "auth": {
                        "type": "bearerToken",
                        "bearerToken": {"type": "asPlaintextValue", "value": "bearer-plain-1"},
                    },
                }
            ],
            "additionalSecrets": {
                "type": "asSecretsWithPlaintextValues",
                "secrets": {"CLIENT_KEY": "client-key-plain-2", "CLIENT_ID": "client-id-plain-3"},
            },
        },
        "worker": {
            "type": "foundryWorker",
            "networkEgressPolicyRids": [
                "ri.resource-policy-manager.global.network-egress-policy.x"
            ],
        },
    }
    body.update(changes)
    return body


def with_config(**changes: Any) -> dict[str, Any]:
    body = create_body()
    body["configuration"].update(changes)
    return body


def with_domain(**changes: Any) -> dict[str, Any]:
    body = create_body()
    body["configuration"]["domains"][0].update(changes)
    return body


def without(key: str) -> dict[str, Any]:
    body = create_body()
    del body[key]
    return body


def auth(value: Any) -> dict[str, Any]:
    return with_domain(auth=value)


# (case id, request body, errorName, parameters the error must carry)
INVALID_CREATES: list[tuple[str, Any, str, dict[str, Any]]] = [
    ("null body", None, "InvalidRequestBody", {"propertyName": "requestBody"}),
    ("array body", [create_body()], "InvalidRequestBody", {"propertyName": "requestBody"}),
    ("string body", "hello", "InvalidRequestBody", {"propertyName": "requestBody"}),
    ("number body", 42, "InvalidRequestBody", {"propertyName": "requestBody"}),
    (
        "no displayName",
        without("displayName"),
        "PropertyCannotBeBlank",
        {"propertyName": "displayName"},
    ),
    (
        "blank displayName",
        create_body(displayName="  "),
        "PropertyCannotBeBlank",
        {"propertyName": "displayName"},
    ),
    (
        "displayName not a string",
        create_body(displayName=7),
        "InvalidRequestBody",
        {"propertyName": "displayName"},
    ),
    (
        "no parentFolderRid",
        without("parentFolderRid"),
        "PropertyCannotBeBlank",
        {"propertyName": "parentFolderRid"},
    ),
    (
        "parentFolderRid not a RID",
        create_body(parentFolderRid="my-folder"),
        "InvalidResourceIdentifier",
        {"propertyName": "parentFolderRid", "value": "my-folder"},
    ),
    (
        "parentFolderRid with a trailing newline",
        create_body(parentFolderRid="ri.compass.main.folder.f\n"),
        "InvalidResourceIdentifier",
        {"propertyName": "parentFolderRid"},
    ),
    (
        "parentFolderRid a list",
        create_body(parentFolderRid=["ri.a.b.c.d"]),
        "InvalidRequestBody",
        {"propertyName": "parentFolderRid"},
    ),
    (
        "no configuration",
        without("configuration"),
        "PropertyCannotBeBlank",
        {"propertyName": "configuration"},
    ),
    (
        "configuration a list",
        create_body(configuration=[]),
        "InvalidRequestBody",
        {"propertyName": "configuration"},
    ),
    (
        "configuration without type",
        with_config(type=None),
        "PropertyCannotBeBlank",
        {"propertyName": "configuration.type"},
    ),
    (
        "s3 configuration",
        create_body(configuration={"type": "s3", "bucketUrl": "s3://b/"}),
        "ConnectionTypeNotSupported",
        {"connectionType": "s3"},
    ),
    (
        "jdbc configuration",
        create_body(configuration={"type": "jdbc"}),
        "ConnectionTypeNotSupported",
        {"connectionType": "jdbc"},
    ),
    (
        "no domains",
        with_config(domains=None),
        "PropertyCannotBeEmpty",
        {"propertyName": "configuration.domains"},
    ),
    (
        "empty domains",
        with_config(domains=[]),
        "PropertyCannotBeEmpty",
        {"propertyName": "configuration.domains"},
    ),
    (
        "domains an object",
        with_config(domains={"host": "x"}),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains"},
    ),
    (
        "null domain",
        with_config(domains=[None]),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0]"},
    ),
    (
        "domain without host",
        with_config(domains=[{"port": 443}]),
        "PropertyCannotBeBlank",
        {"propertyName": "configuration.domains[0].host"},
    ),
    (
        "host a number",
        with_domain(host=12),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].host"},
    ),
    (
        "host with protocol",
        with_domain(host="https://api.example.com"),
        "HostNameCannotHaveProtocolOrPort",
        {"hostName": "https://api.example.com"},
    ),
    (
        "host with port",
        with_domain(host="api.example.com:8443"),
        "HostNameCannotHaveProtocolOrPort",
        {"hostName": "api.example.com:8443"},
    ),
    (
        "port a string",
        with_domain(port="443"),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].port"},
    ),
    (
        "port a boolean",
        with_domain(port=True),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].port"},
    ),
    ("port zero", with_domain(port=0), "PortNotInRange", {"port": 0}),
    ("port too large", with_domain(port=70000), "PortNotInRange", {"port": 70000}),
    (
        "unknown scheme",
        with_domain(scheme="FTP"),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].scheme"},
    ),
    (
        "auth over plain HTTP",
        with_domain(scheme="HTTP"),
        "DomainMustUseHttpsWithAuthentication",
        {"propertyName": "configuration.domains[0].scheme"},
    ),
    (
        "auth a string",
        auth("token"),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].auth"},
    ),
    (
        "unknown auth type",
        auth({"type": "kerberos"}),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].auth.type"},
    ),
    (
        "bearer token as secret name",
        auth({"type": "bearerToken", "bearerToken": {"type": "asSecretName", "value": "X"}}),
        "EncryptedPropertyMustBeSpecifiedAsPlaintextValue",
        {"propertyName": "configuration.domains[0].auth.bearerToken"},
    ),
    (
        "bearer token missing",
        auth({"type": "bearerToken"}),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].auth.bearerToken"},
    ),
    (
        "bearer token value not a string",
        auth({"type": "bearerToken", "bearerToken": {"type": "asPlaintextValue", "value": 99}}),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].auth.bearerToken.value"},
    ),
    (
        "api key without location",
        auth({"type": "apiKey", "apiKey": {"type": "asPlaintextValue", "value": "k"}}),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].auth.location"},
    ),
    (
        "api key in a cookie",
        auth(
            {
                "type": "apiKey",
                "location": {"type": "cookie"},
                "apiKey": {"type": "asPlaintextValue", "value": "k"},
            }
        ),
        "InvalidRequestBody",
        {"propertyName": "configuration.domains[0].auth.location.type"},
    ),
    (
        "basic without username",
        auth({"type": "basic", "password": {"type": "asPlaintextValue", "value": "pw"}}),
        "PropertyCannotBeBlank",
        {"propertyName": "configuration.domains[0].auth.username"},
    ),
    (
        "additional secrets as names",
        with_config(additionalSecrets={"type": "asSecretsNames", "secretNames": ["A"]}),
        "AdditionalSecretsMustBeSpecifiedAsPlaintextValueMap",
        {"propertyName": "configuration.additionalSecrets"},
    ),
    (
        "additional secret value a number",
        with_config(
            additionalSecrets={"type": "asSecretsWithPlaintextValues", "secrets": {"A": 1}}
        ),
        "InvalidRequestBody",
        {"propertyName": "configuration.additionalSecrets.secrets['A']"},
    ),
    (
        "additional secrets a list",
        with_config(additionalSecrets={"type": "asSecretsWithPlaintextValues", "secrets": ["A"]}),
        "InvalidRequestBody",
        {"propertyName": "configuration.additionalSecrets.secrets"},
    ),
    (
        "secret name clashes with generated auth name",
        with_config(
            additionalSecrets={
                "type": "asSecretsWithPlaintextValues",
                "secrets": {"domains[0].auth.bearerToken": "v"},
            }
        ),
        "DuplicateSecretName",
        {"secretName": "domains[0].auth.bearerToken"},
    ),
    (
        "oauth2ClientRid not a RID",
        with_config(oauth2ClientRid="client"),
        "InvalidResourceIdentifier",
        {"propertyName": "configuration.oauth2ClientRid"},
    ),
    ("no worker", without("worker"), "PropertyCannotBeBlank", {"propertyName": "worker"}),
    (
        "unknown worker",
        create_body(worker={"type": "unknownWorker"}),
        "UnknownWorkerCannotBeUsedForCreatingOrUpdatingConnections",
        {},
    ),
    (
        "agent worker",
        create_body(worker={"type": "agentWorker"}),
        "InvalidRequestBody",
        {"propertyName": "worker.type"},
    ),
    (
        "egress policies not a list",
        create_body(worker={"type": "foundryWorker", "networkEgressPolicyRids": "ri.a.b.c.d"}),
        "InvalidRequestBody",
        {"propertyName": "worker.networkEgressPolicyRids"},
    ),
    (
        "egress policy not a RID",
        create_body(worker={"type": "foundryWorker", "networkEgressPolicyRids": ["policy"]}),
        "InvalidResourceIdentifier",
        {"propertyName": "worker.networkEgressPolicyRids[0]"},
    ),
]


def default_connectivity() -> Connectivity:
    seeds = yaml.safe_load(DEFAULT_SEED.read_text())["foundry"]["connections"]
    return Connectivity.from_seed(
        [ConnectionSeed.from_node(Node(item, f"c[{i}]")) for i, item in enumerate(seeds)], NOW
    )


# Core -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error_name", "parameters"),
    [case[1:] for case in INVALID_CREATES],
    ids=[case[0] for case in INVALID_CREATES],
)
def test_invalid_create_requests_are_typed_errors(
    body: Any, error_name: str, parameters: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        ConnectionDraft.from_json(copy.deepcopy(body))
    assert caught.value.code == error_name
    assert parameters.items() <= caught.value.parameters.items()


def test_valid_create_request_keeps_secrets_by_name() -> None:
    draft = ConnectionDraft.from_json(create_body())
    assert draft.additional_secret_names == ("CLIENT_KEY", "CLIENT_ID")
    assert dict(draft.secrets) == {
        "CLIENT_KEY": "client-key-plain-2",
        "CLIENT_ID": "client-id-plain-3",
        "domains[0].auth.bearerToken": "bearer-plain-1",
    }
    auth = draft.domains[0].auth
    assert auth is not None
    assert auth.secret_name == "domains[0].auth.bearerToken"
    # Secret values stay out of reprs (tracebacks, logs).
    assert "plain" not in repr(draft)


def test_every_auth_kind_is_read() -> None:
    body = with_config(
        domains=[
            {
                "host": "a.example",
                "auth": {
                    "type": "apiKey",
                    "location": {"type": "header", "headerName": "X-Api-Key"},
                    "apiKey": {"type": "asPlaintextValue", "value": "api-key-value"},
                },
            },
            {
                "host": "b.example",
                "auth": {
                    "type": "apiKey",
                    "location": {"type": "queryParameter", "queryParameterName": "key"},
                    "apiKey": {"type": "asPlaintextValue", "value": "api-key-value-2"},
                },
            },
            {
                "host": "c.example",
                "scheme": "HTTPS",
                "auth": {
                    "type": "basic",
                    "username": "svc",
                    "password": {"type": "asPlaintextValue", "value": "pw-value"},
                },
            },
            {"host": "d.example", "scheme": "HTTP", "auth": {"type": "oauth2"}},
            {"host": "e.example", "scheme": "HTTP"},
        ],
        oauth2ClientRid="ri.third-party-applications.main.application.abc",
    )
    draft = ConnectionDraft.from_json(body)
    kinds = [d.auth.kind if d.auth else None for d in draft.domains]
    assert kinds == ["apiKey", "apiKey", "basic", "oauth2", None]
    assert set(draft.secrets) == {
        "CLIENT_KEY",
        "CLIENT_ID",
        "domains[0].auth.apiKey",
        "domains[1].auth.apiKey",
        "domains[2].auth.password",
    }
    assert draft.oauth2_client_rid == "ri.third-party-applications.main.application.abc"


def test_seeded_connection_references_its_secret_by_name() -> None:
    connection = default_connectivity().get(SEEDED_RID)
    assert connection.secrets == {"EXAMPLE_API_TOKEN": SEEDED_SECRET}
    assert connection.additional_secret_names == ("EXAMPLE_API_TOKEN",)
    assert connection.domains[0].auth is not None
    assert connection.domains[0].auth.secret_name == "EXAMPLE_API_TOKEN"
    assert not connection.worker.is_foundry


def test_seeded_plaintext_auth_is_stored_under_a_generated_name() -> None:
    seed = ConnectionSeed(
        rid="ri.magritte..source.seeded",
        display_name="Seeded",
        parent_folder_rid="ri.compass.main.folder.f",
        domains=(
            DomainSeed(
                host="h.example",
                port=None,
                scheme="HTTP",
                auth={
                    "type": "basic",
                    "username": "u",
                    "password": {"type": "asPlaintextValue", "value": "seeded-pw"},
                },
            ),
        ),
        oauth2_client_rid=None,
        secrets={},
        network_egress_policy_rids=("ri.a.b.network-egress-policy.p",),
    )
    connection = Connectivity.from_seed([seed], NOW).get(seed.rid)
    assert connection.secrets == {"domains[0].auth.password": "seeded-pw"}
    assert connection.additional_secret_names == ()
    assert connection.worker.network_egress_policy_rids == ("ri.a.b.network-egress-policy.p",)


def test_a_malformed_seeded_auth_is_a_seed_error_naming_the_domain() -> None:
    seed = ConnectionSeed(
        rid="ri.magritte..source.bad",
        display_name="Bad",
        parent_folder_rid="ri.compass.main.folder.f",
        domains=(DomainSeed(host="h", port=None, scheme=None, auth={"type": "kerberos"}),),
        oauth2_client_rid=None,
        secrets={},
        network_egress_policy_rids=None,
    )
    with pytest.raises(SeedError) as caught:
        Connectivity.from_seed([seed], NOW)
    assert caught.value.path == "foundry.connections[0].domains[0]"
    assert caught.value.message.startswith("auth: auth.type must be one of bearerToken")


def test_update_secrets_merges_and_rejects_unknown_names_without_change() -> None:
    connectivity = default_connectivity()
    draft = ConnectionDraft.from_json(create_body())
    rid = "ri.magritte..source.11111111-1111-4111-8111-111111111111"
    connectivity.create(draft, rid=rid, now=NOW)

    connectivity.update_secrets(rid, {"CLIENT_KEY": "rotated"}, now=NOW + 5)
    connection = connectivity.get(rid)
    assert connection.secrets["CLIENT_KEY"] == "rotated"
    assert connection.secrets["CLIENT_ID"] == "client-id-plain-3"  # omitted: kept
    assert connection.updated_at == NOW + 5

    # The auth secret's generated name can be updated too.
    connectivity.update_secrets(rid, {"domains[0].auth.bearerToken": "new-bearer"}, now=NOW + 6)
    assert connection.secrets["domains[0].auth.bearerToken"] == "new-bearer"

    before = dict(connection.secrets)
    with pytest.raises(InvalidArgument) as caught:
        connectivity.update_secrets(
            rid, {"CLIENT_KEY": "value-x1", "NEW": "value-y1", "ALSO": "value-z1"}, now=NOW + 7
        )
    assert caught.value.code == "SecretNamesDoNotExist"
    assert caught.value.parameters == {"connectionRid": rid, "secretNames": ["ALSO", "NEW"]}
    assert connection.secrets == before  # validated first, nothing changed
    assert "value-" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "property_name"),
    [
        (None, "requestBody"),
        ([], "requestBody"),
        ({}, "secrets"),
        ({"secrets": None}, "secrets"),
        ({"secrets": ["A"]}, "secrets"),
        ({"secrets": {"A": 5}}, "secrets['A']"),
        ({"secrets": {" ": "v"}}, "secrets (a secret name)"),
    ],
)
def test_invalid_secret_updates(body: Any, property_name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_secret_update(body)
    assert caught.value.parameters["propertyName"] == property_name


def test_lookups_and_failed_creates_leave_state_alone() -> None:
    connectivity = default_connectivity()
    with pytest.raises(NotFound) as missing:
        connectivity.get("ri.magritte..source.missing")
    assert missing.value.code == "ConnectionNotFound"
    assert missing.value.parameters == {"connectionRid": "ri.magritte..source.missing"}
    with pytest.raises(InvalidArgument) as bad:
        connectivity.get("not a rid")
    assert bad.value.code == "InvalidResourceIdentifier"
    connectivity.limit = 1
    with pytest.raises(Conflict, match="at most 1 connections"):
        connectivity.create(
            ConnectionDraft.from_json(create_body()), rid="ri.magritte..source.x", now=NOW
        )
    assert connectivity.count() == 1


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, (*prefix, index))
    return found


@st.composite
def damaged_create_bodies(draw: st.DrawFn) -> Any:
    """A valid create body with one part (anywhere, or the whole) replaced by random JSON."""
    body = create_body()
    path = draw(st.sampled_from(paths_of(body)))
    replacement = draw(JSON_VALUES)
    if not path:
        return replacement
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = replacement
    return body


@settings(max_examples=300, deadline=None)
@given(damaged_create_bodies())
def test_any_damaged_create_body_is_accepted_or_an_invalid_argument(body: Any) -> None:
    # Anything other than InvalidArgument (a TypeError, a KeyError, ...) fails the test.
    error: InvalidArgument | None = None
    try:
        ConnectionDraft.from_json(body)
    except InvalidArgument as caught:
        error = caught
    if error is not None:
        assert error.code
        assert "propertyName" in error.parameters or error.parameters.keys() <= {
            "connectionType",
            "hostName",
            "port",
            "secretName",
        }


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_any_secret_update_body_is_accepted_or_an_invalid_argument(body: Any) -> None:
    error: InvalidArgument | None = None
    secrets: dict[str, str] = {}
    try:
        secrets = read_secret_update(body)
    except InvalidArgument as caught:
        error = caught
    if error is not None:
        assert error.code in ("InvalidRequestBody", "PropertyCannotBeBlank")
    assert all(isinstance(value, str) for value in secrets.values())


# HTTP -----------------------------------------------------------------------------------------


def assert_conjure(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    codes = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHORIZED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "CONFLICT",
    }
    assert body["errorCode"] == codes[status]
    assert body["errorName"] == name
    assert isinstance(body["errorDescription"], str)
    assert body["errorDescription"]
    uuid.UUID(body["errorInstanceId"])
    assert isinstance(body["parameters"], dict)
    return dict(body["parameters"])


async def test_seeded_connection_is_readable_and_reset_restores_it(
    start_emulator: StartEmulator,
) -> None:
    running = await start_emulator()
    with trio.fail_after(20):
        async with running.client() as client:
            got = await client.get(f"/api/v2/connectivity/connections/{SEEDED_RID}", headers=JANE)
            assert got.status_code == 200
            seeded = got.json()
            assert seeded == {
                "rid": SEEDED_RID,
                "parentFolderRid": "ri.compass.main.folder.00000000-0000-4000-8000-000000000002",
                "displayName": "Example REST API",
                "exportSettings": {
                    "exportsEnabled": False,
                    "exportEnabledWithoutMarkingsValidation": False,
                },
                "worker": {"type": "unknownWorker"},
                "configuration": {
                    "type": "rest",
                    "domains": [
                        {
                            "host": "api.example.com",
                            "port": 443,
                            "scheme": "HTTPS",
                            "auth": {
                                "type": "bearerToken",
                                "bearerToken": {
                                    "type": "asSecretName",
                                    "value": "EXAMPLE_API_TOKEN",
                                },
                            },
                        }
                    ],
                    "additionalSecrets": {
                        "type": "asSecretsNames",
                        "secretNames": ["EXAMPLE_API_TOKEN"],
                    },
                },
            }
            created = await client.post(
                "/api/v2/connectivity/connections", json=create_body(), headers=JANE
            )
            assert created.status_code == 200
            new_rid = created.json()["rid"]
            await client.post(
                f"/api/v2/connectivity/connections/{SEEDED_RID}/updateSecrets",
                json={"secrets": {"EXAMPLE_API_TOKEN": "changed"}},
                headers=JANE,
            )
            assert running.foundry.connectivity.get(SEEDED_RID).secrets == {
                "EXAMPLE_API_TOKEN": "changed"
            }

            running.foundry.reset()

            again = await client.get(f"/api/v2/connectivity/connections/{SEEDED_RID}", headers=JANE)
            assert again.json() == seeded
            assert running.foundry.connectivity.get(SEEDED_RID).secrets == {
                "EXAMPLE_API_TOKEN": SEEDED_SECRET
            }
            gone = await client.get(f"/api/v2/connectivity/connections/{new_rid}", headers=JANE)
            assert assert_conjure(gone, 404, "ConnectionNotFound") == {"connectionRid": new_rid}
            state = (await client.get("/_emulate/state")).json()
            assert state["services"]["foundry"]["connections"] == 1


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
async def test_create_get_configuration_and_update_secrets(
    start_emulator: StartEmulator, http2: bool
) -> None:
    running = await start_emulator()
    with trio.fail_after(20):
        async with running.client(http2=http2) as client:
            created = await client.post(
                "/api/v2/connectivity/connections?preview=true", json=create_body(), headers=JANE
            )
            assert created.status_code == 200, created.text
            connection = created.json()
            rid = connection["rid"]
            assert rid.startswith("ri.magritte..source.")
            uuid.UUID(rid.rsplit(".", 1)[1])
            assert connection["displayName"] == "Weather API"
            assert connection["worker"] == {
                "type": "foundryWorker",
                "networkEgressPolicyRids": [
                    "ri.resource-policy-manager.global.network-egress-policy.x"
                ],
            }
            configuration = connection["configuration"]
            assert configuration["domains"] == [
                {
                    "host": "api.weather.example",
                    "port": 443,
                    "scheme": "HTTPS",
                    "auth": {
                        "type": "bearerToken",
                        "bearerToken": {
                            "type": "asSecretName",
                            "value": "domains[0].auth.bearerToken",
                        },
                    },
                }
            ]
            assert configuration["additionalSecrets"] == {
                "type": "asSecretsNames",
                "secretNames": ["CLIENT_ID", "CLIENT_KEY"],
            }

            got = await client.get(
                f"/api/v2/connectivity/connections/{rid}?preview=true", headers=JANE
            )
            assert got.json() == connection
            config = await client.get(
                f"/api/v2/connectivity/connections/{rid}/getConfiguration", headers=JANE
            )
            assert config.status_code == 200
            assert config.json() == configuration

            updated = await client.post(
                f"/api/v2/connectivity/connections/{rid}/updateSecrets?preview=true",
                json={"secrets": {"CLIENT_KEY": "rotated-key"}},
                headers=JANE,
            )
            assert updated.status_code == 204
            assert updated.content == b""
            stored = running.foundry.connectivity.get(rid).secrets
            assert stored["CLIENT_KEY"] == "rotated-key"
            assert stored["CLIENT_ID"] == "client-id-plain-3"
            # Names are unchanged by an update.
            after = await client.get(
                f"/api/v2/connectivity/connections/{rid}/getConfiguration", headers=JANE
            )
            assert after.json() == configuration


async def test_invalid_create_requests_get_400s_never_500s(emulator: Running) -> None:
    with trio.fail_after(30):
        async with emulator.client() as client:
            for case_id, body, error_name, parameters in INVALID_CREATES:
                response = await client.post(
                    "/api/v2/connectivity/connections",
                    content=json.dumps(body),
                    headers={**JANE, "Content-Type": "application/json"},
                )
                got = assert_conjure(response, 400, error_name)
                assert parameters.items() <= got.items(), case_id
            for raw in (b"", b"   ", b"{", b"\xff\xfe", b"NaN", b'{"displayName": Infinity}'):
                response = await client.post(
                    "/api/v2/connectivity/connections", content=raw, headers=JANE
                )
                assert_conjure(response, 400, "InvalidRequestBody")
            assert emulator.foundry.connectivity.count() == 1


async def test_scopes_and_credentials(emulator: Running) -> None:
    base = "/api/v2/connectivity/connections"
    with trio.fail_after(20):
        async with emulator.client() as client:
            denied = await client.post(base, json=create_body(), headers=BOB)
            assert assert_conjure(denied, 403, "CreateConnectionPermissionDenied") == {}
            denied = await client.get(f"{base}/{SEEDED_RID}", headers=BOB)
            assert assert_conjure(denied, 403, "GetConnectionPermissionDenied") == {
                "connectionRid": SEEDED_RID
            }
            denied = await client.get(f"{base}/{SEEDED_RID}/getConfiguration", headers=BOB)
            assert assert_conjure(denied, 403, "GetConfigurationPermissionDenied") == {
                "connectionRid": SEEDED_RID
            }
            denied = await client.post(
                f"{base}/{SEEDED_RID}/updateSecrets", json={"secrets": {}}, headers=BOB
            )
            assert assert_conjure(denied, 403, "UpdateSecretsForConnectionPermissionDenied") == {
                "connectionRid": SEEDED_RID
            }
            missing = await client.get(f"{base}/{SEEDED_RID}")
            assert_conjure(missing, 401, "MissingCredentials")
            wrong = await client.get(
                f"{base}/{SEEDED_RID}", headers={"Authorization": "Bearer nope"}
            )
            assert_conjure(wrong, 401, "InvalidCredentials")
            assert emulator.foundry.connectivity.count() == 1


async def test_missing_connections_bad_rids_and_bad_secret_updates(emulator: Running) -> None:
    base = "/api/v2/connectivity/connections"
    missing_rid = "ri.magritte..source.00000000-0000-4000-8000-00000000ffff"
    with trio.fail_after(20):
        async with emulator.client() as client:
            for path in (f"{base}/{missing_rid}", f"{base}/{missing_rid}/getConfiguration"):
                response = await client.get(path, headers=JANE)
                assert assert_conjure(response, 404, "ConnectionNotFound") == {
                    "connectionRid": missing_rid
                }
            # The connection is checked before the body is read.
            response = await client.post(
                f"{base}/{missing_rid}/updateSecrets", content=b"not json", headers=JANE
            )
            assert_conjure(response, 404, "ConnectionNotFound")
            response = await client.get(f"{base}/not-a-rid", headers=JANE)
            assert assert_conjure(response, 400, "InvalidResourceIdentifier") == {
                "propertyName": "connectionRid",
                "value": "not-a-rid",
            }
            update = f"{base}/{SEEDED_RID}/updateSecrets"
            for raw in (b"", b"null", b"[]", b'{"secrets": []}', b'{"secrets": {"A": 1}}', b"{"):
                response = await client.post(update, content=raw, headers=JANE)
                assert_conjure(response, 400, "InvalidRequestBody")
            response = await client.post(
                update, json={"secrets": {"EXAMPLE_API_TOKEN": "v", "OTHER": "w"}}, headers=JANE
            )
            assert assert_conjure(response, 400, "SecretNamesDoNotExist") == {
                "connectionRid": SEEDED_RID,
                "secretNames": ["OTHER"],
            }
            assert emulator.foundry.connectivity.get(SEEDED_RID).secrets == {
                "EXAMPLE_API_TOKEN": SEEDED_SECRET
            }
            empty = await client.post(update, json={"secrets": {}}, headers=JANE)
            assert empty.status_code == 204
            wrong_method = await client.delete(f"{base}/{SEEDED_RID}", headers=JANE)
            assert wrong_method.status_code == 405
            assert wrong_method.json()["errorCode"] == "INVALID_ARGUMENT"


async def test_no_secret_value_appears_in_any_response(emulator: Running) -> None:
    secrets = {
        "bearer": "sv-bearer-7f3a1c",
        "additional": "sv-additional-9b2d4e",
        "api_key": "sv-apikey-5c8e2f",
        "password": "sv-password-1a6b3d",
        "rotated": "sv-rotated-4e9f7a",
        "bad_type_seen": "sv-rejected-2d5c8b",
    }
    responses: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        responses.append(response)

    body = with_config(
        domains=[
            {
                "host": "a.example",
                "scheme": "HTTPS",
                "auth": {
                    "type": "bearerToken",
                    "bearerToken": {"type": "asPlaintextValue", "value": secrets["bearer"]},
                },
            },
            {
                "host": "b.example",
                "auth": {
                    "type": "apiKey",
                    "location": {"type": "header", "headerName": "X-Key"},
                    "apiKey": {"type": "asPlaintextValue", "value": secrets["api_key"]},
                },
            },
            {
                "host": "c.example",
                "auth": {
                    "type": "basic",
                    "username": "svc",
                    "password": {"type": "asPlaintextValue", "value": secrets["password"]},
                },
            },
        ],
        additionalSecrets={
            "type": "asSecretsWithPlaintextValues",
            "secrets": {"EXTRA": secrets["additional"]},
        },
    )
    base = "/api/v2/connectivity/connections"
    with trio.fail_after(30):
        async with emulator.client(event_hooks={"response": [keep]}) as client:
            created = await client.post(base, json=body, headers=JANE)
            assert created.status_code == 200
            rid = created.json()["rid"]
            await client.get(f"{base}/{rid}", headers=JANE)
            await client.get(f"{base}/{rid}/getConfiguration", headers=JANE)
            await client.get(f"{base}/{SEEDED_RID}", headers=JANE)
            await client.get(f"{base}/{SEEDED_RID}/getConfiguration", headers=JANE)
            await client.post(
                f"{base}/{rid}/updateSecrets",
                json={"secrets": {"EXTRA": secrets["rotated"]}},
                headers=JANE,
            )
            # Rejected requests that carry secrets: wrong types, unknown names, plain HTTP, scope.
            await client.post(
                f"{base}/{rid}/updateSecrets",
                json={"secrets": {"NOPE": secrets["bad_type_seen"]}},
                headers=JANE,
            )
            await client.post(
                f"{base}/{rid}/updateSecrets",
                json={"secrets": {"EXTRA": [secrets["bad_type_seen"]]}},
                headers=JANE,
            )
            plain_http = copy.deepcopy(body)
            plain_http["configuration"]["domains"][0]["scheme"] = "HTTP"
            await client.post(base, json=plain_http, headers=JANE)
            as_name = copy.deepcopy(body)
            as_name["configuration"]["domains"][0]["auth"]["bearerToken"] = {
                "type": "asSecretName",
                "value": secrets["bearer"],
            }
            await client.post(base, json=as_name, headers=JANE)
            wrong_value = copy.deepcopy(body)
            wrong_value["configuration"]["additionalSecrets"]["secrets"]["EXTRA"] = {
                "v": secrets["additional"]
            }
            await client.post(base, json=wrong_value, headers=JANE)
            await client.post(base, json=body, headers=BOB)
            await client.get(
                f"{base}/{rid}?token={secrets['bearer']}&secret={secrets['password']}",
                headers=JANE,
            )
            await client.get("/_emulate/state")
            await client.get("/_emulate/requests")
    assert len(responses) == 15
    assert {r.status_code for r in responses} == {200, 204, 400, 403}
    everything = [SEEDED_SECRET, *secrets.values()]
    for response in responses:
        text = (
            response.content.decode("utf-8")
            + "\n"
            + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        )
        for secret in everything:
            assert secret not in text, (response.request.url, secret)
    # They were kept, though.
    stored = emulator.foundry.connectivity.get(rid).secrets
    assert stored["EXTRA"] == secrets["rotated"]
    assert stored["domains[2].auth.password"] == secrets["password"]


async def test_json_body_content_type_is_not_required(emulator: Running) -> None:
    # curl -d sends application/x-www-form-urlencoded; the body is still read as JSON.
    with trio.fail_after(20):
        async with emulator.client() as client:
            response = await client.post(
                "/api/v2/connectivity/connections",
                content=json.dumps(create_body()),
                headers={**JANE, "Content-Type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 200
