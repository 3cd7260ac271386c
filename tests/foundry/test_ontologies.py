"""Ontologies: query case matching and paging in the core, and the HTTP API over real sockets."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

from emulator.foundry.core.errors import InvalidArgument, NotFound
from emulator.foundry.core.ontologies import Ontologies, json_equal
from emulator.foundry.seed import FoundrySeed
from emulator.platform.seedschema import Node

JANE = {"Authorization": "Bearer local-token-jane"}
NO_SCOPE = {"Authorization": "Bearer token-without-scopes"}

# Three ontologies; `clinic` has queries covering every matching rule.
SEED: dict[str, Any] = {
    "tokens": {
        "local-token-jane": {"username": "jane", "scopes": ["api:ontologies-read"]},
        "token-without-scopes": {"username": "jane", "scopes": []},
    },
    "foundry": {
        "users": [{"username": "jane"}],
        "ontologies": [
            {
                "api_name": "clinic",
                "rid": "ri.ontology.main.ontology.clinic",
                "display_name": "Clinic",
                "description": "Patients",
                "queries": [
                    {"api_name": "echo", "result": {"message": "HELLO"}},
                    {
                        "api_name": "patientStatus",
                        "cases": [
                            {"parameters": {"patientId": "p-1"}, "result": {"status": "stable"}},
                            {"parameters": {"patientId": "p-2"}, "result": {"status": "critical"}},
                            {
                                "parameters": {"patientId": "p-2", "day": 2},
                                "result": {"status": "never: the case above wins first"},
                            },
                        ],
                        "result": {"status": "unknown"},
                    },
                    {
                        "api_name": "strict",
                        "cases": [
                            {"parameters": {"n": 1, "flag": True}, "result": "one"},
                            {
                                "parameters": {"tags": ["a", "b"], "where": {"x": None}},
                                "result": "nested",
                            },
                        ],
                    },
                    {"api_name": "nothing", "result": None},
                    {"api_name": "anything", "cases": [{"parameters": {}, "result": 7}]},
                ],
            },
            {"api_name": "second", "description": None},
            {"api_name": "third", "display_name": "Third", "description": "3"},
        ],
    },
}


def core() -> Ontologies:
    tokens = ()
    seed = FoundrySeed.from_node(Node(SEED["foundry"], "foundry"), tokens)
    return Ontologies.from_seed(seed.ontologies)


# Core -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        (1, 1.0, True),
        (1, True, False),
        (0, False, False),
        (True, True, True),
        ("1", 1, False),
        (None, None, True),
        (None, 0, False),
        ([1, [2]], [1, [2]], True),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ("x", "x", True),
    ],
)
def test_json_equality(left: Any, right: Any, equal: bool) -> None:
    assert json_equal(left, right) is equal
    assert json_equal(right, left) is equal


@pytest.mark.parametrize(
    ("query", "parameters", "value"),
    [
        ("echo", {}, {"message": "HELLO"}),
        ("echo", {"anything": [1, 2]}, {"message": "HELLO"}),
        ("patientStatus", {"patientId": "p-1"}, {"status": "stable"}),
        ("patientStatus", {"patientId": "p-2"}, {"status": "critical"}),
        # Parameters a case does not name are ignored; the first matching case wins.
        ("patientStatus", {"patientId": "p-2", "day": 2}, {"status": "critical"}),
        ("patientStatus", {"patientId": "p-9"}, {"status": "unknown"}),
        ("patientStatus", {}, {"status": "unknown"}),
        ("patientStatus", {"patientId": ["p-1"]}, {"status": "unknown"}),
        ("strict", {"n": 1.0, "flag": True}, "one"),
        ("strict", {"tags": ["a", "b"], "where": {"x": None}, "extra": 1}, "nested"),
        ("nothing", {"x": 1}, None),
        ("anything", {"x": 1}, 7),
    ],
)
def test_query_cases(query: str, parameters: dict[str, Any], value: Any) -> None:
    assert core().execute("clinic", query, parameters) == value


@pytest.mark.parametrize(
    "parameters",
    [{}, {"n": True, "flag": True}, {"n": 1}, {"n": 1, "flag": 1}, {"tags": ["b", "a"]}],
)
def test_no_matching_case_and_no_default_names_query_and_parameters(
    parameters: dict[str, Any],
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        core().execute("ri.ontology.main.ontology.clinic", "strict", parameters)
    error = caught.value
    assert error.code == "NoMatchingQueryCase"
    assert error.parameters["queryApiName"] == "strict"
    assert error.parameters["ontology"] == "clinic"
    assert error.parameters["parameters"] == parameters
    assert error.parameters["caseParameters"] == [
        {"n": 1, "flag": True},
        {"tags": ["a", "b"], "where": {"x": None}},
    ]
    assert "'strict'" in error.message
    assert "no default" in error.message


def test_lookup_by_rid_then_api_name_and_not_found_errors() -> None:
    ontologies = core()
    assert ontologies.resolve("ri.ontology.main.ontology.clinic").api_name == "clinic"
    assert ontologies.resolve("third").display_name == "Third"
    second = ontologies.resolve("second")
    assert second.description == ""
    assert second.rid.startswith("ri.ontology.main.ontology.")
    with pytest.raises(NotFound) as by_name:
        ontologies.resolve("missing")
    assert (by_name.value.code, by_name.value.parameters) == (
        "OntologyNotFound",
        {"apiName": "missing"},
    )
    with pytest.raises(NotFound) as by_rid:
        ontologies.resolve("ri.ontology.main.ontology.missing")
    assert by_rid.value.parameters == {"ontologyRid": "ri.ontology.main.ontology.missing"}
    with pytest.raises(NotFound) as query:
        ontologies.execute("clinic", "missingQuery", {})
    assert query.value.code == "QueryNotFound"
    assert query.value.parameters == {"query": "missingQuery", "ontology": "clinic"}


def test_paging_walks_every_ontology_once() -> None:
    ontologies = core()
    seen: list[str] = []
    token = None
    for _ in range(10):
        page = ontologies.page(2, token)
        seen += [o.api_name for o in page.data]
        token = page.next_page_token
        if token is None:
            break
    assert seen == ["clinic", "second", "third"]
    assert ontologies.page(None, None).next_page_token is None
    assert len(ontologies.page(None, None).data) == 3
    assert len(ontologies.page(10**9, None).data) == 3


@pytest.mark.parametrize(
    ("size", "token", "name"),
    [
        (0, None, "InvalidPageSize"),
        (-3, None, "InvalidPageSize"),
        (1, "MQ", "InvalidPageToken"),  # the prior emulator's offset token
        (1, "!!!", "InvalidPageToken"),
        (1, "b250b2xvZ3k6cmkubWlzc2luZw", "InvalidPageToken"),  # "ontology:ri.missing"
    ],
)
def test_bad_paging_arguments(size: int, token: str | None, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        core().page(size, token)
    assert caught.value.code == name


# HTTP -----------------------------------------------------------------------------------------


def assert_conjure(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    codes = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHORIZED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
    }
    assert body["errorCode"] == codes[status]
    assert body["errorName"] == name
    assert isinstance(body["errorDescription"], str)
    assert body["errorDescription"]
    uuid.UUID(body["errorInstanceId"])
    assert isinstance(body["parameters"], dict)
    return dict(body["parameters"])


async def test_default_seed_queries(emulator: Running) -> None:
    base = "/api/v2/ontologies"
    with trio.fail_after(20):
        async with emulator.client() as client:
            listed = await client.get(base, headers=JANE)
            assert listed.status_code == 200
            [health] = listed.json()["data"]
            assert "nextPageToken" not in listed.json()
            assert health["apiName"] == "health"
            assert set(health) == {"rid", "apiName", "displayName", "description"}
            bob = {"Authorization": "Bearer local-token-bob"}
            for ontology in ("health", health["rid"]):
                echo = await client.post(
                    f"{base}/{ontology}/queries/echo/execute", json={"parameters": {}}, headers=bob
                )
                assert echo.json() == {"value": {"message": "HELLO"}}
            for patient, status in (("p-1", "stable"), ("p-2", "critical"), ("p-3", "unknown")):
                response = await client.post(
                    f"{base}/health/queries/patientStatus/execute",
                    json={"parameters": {"patientId": patient}},
                    headers=JANE,
                )
                assert response.json() == {"value": {"status": status}}


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "h2c"])
async def test_execute_bodies_and_ignored_query_parameters(
    start_emulator: StartEmulator, http2: bool
) -> None:
    running = await start_emulator(SEED)
    path = "/api/v2/ontologies/clinic/queries/patientStatus/execute"
    sdk_params = {
        "version": "1.2.3",
        "branch": "master",
        "sdkPackageRid": "ri.a.b.c.d",
        "sdkVersion": "0.1.0",
        "transactionId": "t-1",
        "scenarioRid": "ri.a.b.c.e",
        "preview": "true",
        "artifactRepository": "ri.x.y.z.w",
        "packageName": "pkg",
    }
    with trio.fail_after(20):
        async with running.client(http2=http2) as client:
            cases: list[tuple[dict[str, Any], Any]] = [
                ({"json": {"parameters": {"patientId": "p-1"}}}, {"status": "stable"}),
                ({"content": b""}, {"status": "unknown"}),  # no body: no parameters
                ({"json": {}}, {"status": "unknown"}),  # no parameters field
                ({"json": {"parameters": None}}, {"status": "unknown"}),
                (
                    {"json": {"parameters": {"patientId": "p-2"}, "options": {}}},
                    {"status": "critical"},
                ),
            ]
            for kwargs, value in cases:
                response = await client.post(path, params=sdk_params, headers=JANE, **kwargs)
                assert response.status_code == 200, (kwargs, response.text)
                assert response.headers["content-type"].startswith("application/json")
                assert response.json() == {"value": value}
            simple = await client.post(
                "/api/v2/ontologies/clinic/queries/nothing/execute", headers=JANE
            )
            assert simple.json() == {"value": None}


async def test_execute_errors(start_emulator: StartEmulator) -> None:
    running = await start_emulator(SEED)
    base = "/api/v2/ontologies"
    with trio.fail_after(20):
        async with running.client() as client:
            for raw in (
                b"null",
                b"[]",
                b'"x"',
                b'{"parameters": []}',
                b'{"parameters": 1}',
                b"{",
                b"\xff",
            ):
                response = await client.post(
                    f"{base}/clinic/queries/echo/execute", content=raw, headers=JANE
                )
                assert_conjure(response, 400, "InvalidRequestBody")
            missing = await client.post(f"{base}/nope/queries/echo/execute", headers=JANE)
            assert assert_conjure(missing, 404, "OntologyNotFound") == {"apiName": "nope"}
            missing = await client.post(
                f"{base}/ri.ontology.main.ontology.nope/queries/echo/execute", headers=JANE
            )
            assert assert_conjure(missing, 404, "OntologyNotFound") == {
                "ontologyRid": "ri.ontology.main.ontology.nope"
            }
            # An unknown query is reported before a bad body.
            missing = await client.post(
                f"{base}/clinic/queries/nope/execute", content=b"{", headers=JANE
            )
            assert assert_conjure(missing, 404, "QueryNotFound") == {
                "query": "nope",
                "ontology": "clinic",
            }
            unmatched = await client.post(
                f"{base}/clinic/queries/strict/execute",
                json={"parameters": {"n": 2}},
                headers=JANE,
            )
            parameters = assert_conjure(unmatched, 400, "NoMatchingQueryCase")
            assert parameters["queryApiName"] == "strict"
            assert parameters["parameters"] == {"n": 2}
            assert '{"n":2}' in unmatched.json()["errorDescription"]
            denied = await client.post(f"{base}/clinic/queries/echo/execute", headers=NO_SCOPE)
            assert assert_conjure(denied, 403, "ExecuteQueryPermissionDenied") == {
                "ontology": "clinic",
                "queryApiName": "echo",
            }
            unauthenticated = await client.post(f"{base}/clinic/queries/echo/execute")
            assert_conjure(unauthenticated, 401, "MissingCredentials")
            wrong_method = await client.get(f"{base}/clinic/queries/echo/execute", headers=JANE)
            assert wrong_method.status_code == 405


async def test_list_paging_over_http(start_emulator: StartEmulator) -> None:
    running = await start_emulator(SEED)
    with trio.fail_after(20):
        async with running.client() as client:
            everything = await client.get("/api/v2/ontologies?preview=true", headers=JANE)
            assert [o["apiName"] for o in everything.json()["data"]] == [
                "clinic",
                "second",
                "third",
            ]
            assert everything.json()["data"][1]["description"] == ""
            names: list[str] = []
            params: dict[str, str] = {"pageSize": "1"}
            for _ in range(5):
                page = await client.get("/api/v2/ontologies", params=params, headers=JANE)
                assert page.status_code == 200
                body = page.json()
                assert len(body["data"]) == 1
                names.append(body["data"][0]["apiName"])
                if "nextPageToken" not in body:
                    break
                params = {"pageSize": "1", "pageToken": body["nextPageToken"]}
            assert names == ["clinic", "second", "third"]
            two = await client.get("/api/v2/ontologies?pageSize=2", headers=JANE)
            assert len(two.json()["data"]) == 2
            rest = await client.get(
                "/api/v2/ontologies",
                params={"pageSize": "2", "pageToken": two.json()["nextPageToken"]},
                headers=JANE,
            )
            assert [o["apiName"] for o in rest.json()["data"]] == ["third"]
            assert "nextPageToken" not in rest.json()
            huge = await client.get("/api/v2/ontologies?pageSize=99999", headers=JANE)
            assert len(huge.json()["data"]) == 3

            for size in ("0", "-1", "abc", "1.5"):
                response = await client.get(f"/api/v2/ontologies?pageSize={size}", headers=JANE)
                parameters = assert_conjure(response, 400, "InvalidPageSize")
                assert str(parameters["pageSize"]) == size
            for token in ("MQ", "garbage!", "b250b2xvZ3k6cmkubWlzc2luZw"):
                response = await client.get(
                    "/api/v2/ontologies", params={"pageToken": token}, headers=JANE
                )
                assert assert_conjure(response, 400, "InvalidPageToken") == {"pageToken": token}
            denied = await client.get("/api/v2/ontologies", headers=NO_SCOPE)
            assert assert_conjure(denied, 403, "ListOntologiesPermissionDenied") == {}


async def test_get_one_ontology(start_emulator: StartEmulator) -> None:
    running = await start_emulator(SEED)
    with trio.fail_after(20):
        async with running.client() as client:
            by_name = await client.get("/api/v2/ontologies/clinic", headers=JANE)
            by_rid = await client.get(
                "/api/v2/ontologies/ri.ontology.main.ontology.clinic", headers=JANE
            )
            assert (
                by_name.json()
                == by_rid.json()
                == {
                    "rid": "ri.ontology.main.ontology.clinic",
                    "apiName": "clinic",
                    "displayName": "Clinic",
                    "description": "Patients",
                }
            )
            missing = await client.get("/api/v2/ontologies/nope", headers=JANE)
            assert assert_conjure(missing, 404, "OntologyNotFound") == {"apiName": "nope"}
            state = (await client.get("/_emulate/state")).json()["services"]["foundry"]
            assert (state["ontologies"], state["queries"]) == (3, 5)
