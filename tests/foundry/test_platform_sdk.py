"""foundry-platform-sdk 1.111.0, unmodified, against the emulator: connectivity and ontologies.

The SDK is synchronous, so every call runs in a worker thread (trio.to_thread.run_sync). Plain
HTTP needs `Config(scheme="http")`; HTTPS trusts the emulator's CA passed explicitly
(`Config(verify=<ca.pem>)`, or REQUESTS_CA_BUNDLE set for the one test that needs it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import yaml
from emulatorrun import Running, StartEmulator
from foundry_sdk import (
    Config,
    FoundryClient,
    NotFoundError,
    PermissionDeniedError,
    UserTokenAuth,
)
from foundry_sdk.v2.connectivity import errors as connectivity_errors
from foundry_sdk.v2.connectivity import models as connectivity_models

DEFAULT_SEED = Path(__file__).resolve().parents[2] / "seeds" / "default.yaml"
SEEDED_RID = "ri.magritte..source.00000000-0000-4000-8000-000000000001"
T = TypeVar("T")


def seed_with_scopeless_token() -> dict[str, Any]:
    seed: dict[str, Any] = yaml.safe_load(DEFAULT_SEED.read_text(encoding="utf-8"))
    seed["tokens"]["local-token-nobody"] = {"username": "bob", "scopes": []}
    return seed


async def in_thread(fn: Callable[[], T]) -> T:
    with trio.fail_after(60):
        return await trio.to_thread.run_sync(fn)


def client_for(running: Running, token: str, *, tls: bool) -> FoundryClient:
    if tls:
        port = running.https_url.rsplit(":", 1)[1]
        config = Config(scheme="https", verify=str(running.ca_path), timeout=20)
        return FoundryClient(UserTokenAuth(token), hostname=f"localhost:{port}", config=config)
    host = running.http_url.removeprefix("http://")
    return FoundryClient(
        UserTokenAuth(token), hostname=host, config=Config(scheme="http", timeout=20)
    )


def create_request(client: FoundryClient) -> connectivity_models.Connection:
    return client.connectivity.Connection.create(
        parent_folder_rid="ri.compass.main.folder.0b5c9a1e-0000-4000-8000-000000000003",
        display_name="Weather (SDK)",
        configuration=connectivity_models.CreateConnectionRequestRestConnectionConfiguration(
            domains=[
                connectivity_models.Domain(
                    host="api.weather.example",
                    port=443,
                    scheme="HTTPS",
                    auth=connectivity_models.BearerToken(
                        bearer_token=connectivity_models.AsPlaintextValue(value="sdk-bearer-61f0")
                    ),
                )
            ],
            additional_secrets=connectivity_models.SecretsWithPlaintextValues(
                secrets={"CLIENT_KEY": "sdk-key-9a3e", "CLIENT_ID": "sdk-id-27c4"}
            ),
        ),
        worker=connectivity_models.CreateConnectionRequestFoundryWorker(
            network_egress_policy_rids=[
                "ri.resource-policy-manager.global.network-egress-policy.sdk"
            ]
        ),
    )


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_connectivity_with_the_sdk(start_emulator: StartEmulator, tls: bool) -> None:
    running = await start_emulator(seed_with_scopeless_token())
    jane = client_for(running, "local-token-jane", tls=tls)
    nobody = client_for(running, "local-token-nobody", tls=tls)
    connections = jane.connectivity.Connection

    connection = await in_thread(lambda: create_request(jane))
    assert isinstance(connection, connectivity_models.Connection)
    assert connection.display_name == "Weather (SDK)"
    assert isinstance(connection.worker, connectivity_models.FoundryWorker)
    configuration = connection.configuration
    assert isinstance(configuration, connectivity_models.RestConnectionConfiguration)
    auth = configuration.domains[0].auth
    assert isinstance(auth, connectivity_models.BearerToken)
    assert auth.bearer_token == connectivity_models.AsSecretName(
        value="domains[0].auth.bearerToken"
    )
    assert configuration.additional_secrets == connectivity_models.SecretsNames(
        secret_names=["CLIENT_ID", "CLIENT_KEY"]
    )

    fetched = await in_thread(lambda: connections.get(connection.rid))
    assert fetched == connection
    seeded = await in_thread(lambda: connections.get(SEEDED_RID))
    assert isinstance(seeded.worker, connectivity_models.UnknownWorker)

    config = await in_thread(lambda: connections.get_configuration(connection.rid))
    assert config == configuration
    dumped = config.model_dump_json(by_alias=True)
    for secret in ("sdk-bearer-61f0", "sdk-key-9a3e", "sdk-id-27c4"):
        assert secret not in dumped

    result = await in_thread(
        lambda: connections.update_secrets(connection.rid, secrets={"CLIENT_KEY": "sdk-new-4b1d"})
    )
    assert result is None
    stored = running.foundry.connectivity.get(connection.rid).secrets
    assert stored["CLIENT_KEY"] == "sdk-new-4b1d"
    assert stored["CLIENT_ID"] == "sdk-id-27c4"

    missing_rid = "ri.magritte..source.00000000-0000-4000-8000-0000000000ff"
    with pytest.raises(connectivity_errors.ConnectionNotFound) as not_found:
        await in_thread(lambda: connections.get(missing_rid))
    assert not_found.value.parameters["connectionRid"] == missing_rid
    with pytest.raises(connectivity_errors.ConnectionNotFound):
        await in_thread(lambda: connections.get_configuration(missing_rid))
    with pytest.raises(connectivity_errors.SecretNamesDoNotExist) as unknown:
        await in_thread(
            lambda: connections.update_secrets(connection.rid, secrets={"NEW_NAME": "v"})
        )
    assert unknown.value.parameters["secretNames"] == ["NEW_NAME"]

    with pytest.raises(connectivity_errors.CreateConnectionPermissionDenied):
        await in_thread(lambda: create_request(nobody))
    with pytest.raises(connectivity_errors.GetConfigurationPermissionDenied) as denied:
        await in_thread(lambda: nobody.connectivity.Connection.get_configuration(SEEDED_RID))
    assert denied.value.parameters["connectionRid"] == SEEDED_RID
    with pytest.raises(connectivity_errors.UpdateSecretsForConnectionPermissionDenied):
        await in_thread(
            lambda: nobody.connectivity.Connection.update_secrets(SEEDED_RID, secrets={})
        )
    # get declares no permission error in the SDK: the generic class carries the name.
    with pytest.raises(PermissionDeniedError) as generic:
        await in_thread(lambda: nobody.connectivity.Connection.get(SEEDED_RID))
    assert generic.value.name == "GetConnectionPermissionDenied"


async def test_typed_validation_errors_from_the_sdk(start_emulator: StartEmulator) -> None:
    running = await start_emulator()
    jane = client_for(running, "local-token-jane", tls=False)

    def create(**changes: Any) -> Any:
        arguments: dict[str, Any] = {
            "parent_folder_rid": "ri.compass.main.folder.f",
            "display_name": "x",
            "configuration": connectivity_models.CreateConnectionRequestRestConnectionConfiguration(
                domains=[connectivity_models.Domain(host="h.example")]
            ),
            "worker": connectivity_models.CreateConnectionRequestFoundryWorker(
                network_egress_policy_rids=[]
            ),
        }
        arguments.update(changes)
        return jane.connectivity.Connection.create(**arguments)

    with pytest.raises(connectivity_errors.PropertyCannotBeBlank) as blank:
        await in_thread(lambda: create(display_name="  "))
    assert blank.value.parameters["propertyName"] == "displayName"
    with pytest.raises(
        connectivity_errors.UnknownWorkerCannotBeUsedForCreatingOrUpdatingConnections
    ):
        await in_thread(
            lambda: create(worker=connectivity_models.CreateConnectionRequestUnknownWorker())
        )
    with pytest.raises(connectivity_errors.ConnectionTypeNotSupported) as unsupported:
        await in_thread(
            lambda: create(
                configuration=connectivity_models.CreateConnectionRequestS3ConnectionConfiguration(
                    bucket_url="s3://bucket/"
                )
            )
        )
    assert unsupported.value.parameters["connectionType"] == "s3"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_ontologies_with_the_sdk(start_emulator: StartEmulator, tls: bool) -> None:
    running = await start_emulator(seed_with_scopeless_token())
    bob = client_for(running, "local-token-bob", tls=tls)
    nobody = client_for(running, "local-token-nobody", tls=tls)

    listed = await in_thread(lambda: bob.ontologies.Ontology.list())
    [health] = listed.data
    assert (health.api_name, health.display_name) == ("health", "Health")
    assert health.description == "A small ontology with queries to try."

    query = bob.ontologies.Query
    echo = await in_thread(lambda: query.execute("health", "echo", parameters={"x": 1}))
    assert echo.value == {"message": "HELLO"}
    by_rid = await in_thread(
        lambda: query.execute(health.rid, "echo", parameters={}, version="1.0.0", branch="master")
    )
    assert by_rid.value == {"message": "HELLO"}
    for patient, status in (("p-1", "stable"), ("p-2", "critical"), ("p-404", "unknown")):
        answer = await in_thread(
            lambda patient=patient: query.execute(  # type: ignore[misc]
                "health",
                "patientStatus",
                parameters={"patientId": patient},
                sdk_package_rid="ri.a.b.c.d",
                sdk_version="1.0.0",
                transaction_id="tx-1",
            )
        )
        assert answer.value == {"status": status}

    with pytest.raises(NotFoundError) as missing:
        await in_thread(lambda: query.execute("nowhere", "echo", parameters={}))
    assert missing.value.name == "OntologyNotFound"
    assert missing.value.parameters == {"apiName": "nowhere"}
    with pytest.raises(NotFoundError) as missing_query:
        await in_thread(lambda: query.execute("health", "nothing", parameters={}))
    assert missing_query.value.name == "QueryNotFound"
    assert missing_query.value.parameters["query"] == "nothing"

    # The SDK declares no typed errors for these endpoints; the generic 403 class fires.
    with pytest.raises(PermissionDeniedError) as denied:
        await in_thread(lambda: nobody.ontologies.Query.execute("health", "echo", parameters={}))
    assert denied.value.name == "ExecuteQueryPermissionDenied"
    with pytest.raises(PermissionDeniedError) as list_denied:
        await in_thread(lambda: nobody.ontologies.Ontology.list())
    assert list_denied.value.name == "ListOntologiesPermissionDenied"


async def test_https_trusting_the_ca_through_the_environment(
    start_emulator: StartEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How an unchangeable caller trusts the emulator: REQUESTS_CA_BUNDLE, nothing in code."""
    running = await start_emulator()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(running.ca_path))
    port = running.https_url.rsplit(":", 1)[1]
    client = FoundryClient(UserTokenAuth("local-token-jane"), hostname=f"localhost:{port}")
    connection = await in_thread(lambda: client.connectivity.Connection.get(SEEDED_RID))
    assert connection.display_name == "Example REST API"
    monkeypatch.undo()
    assert "REQUESTS_CA_BUNDLE" not in os.environ
