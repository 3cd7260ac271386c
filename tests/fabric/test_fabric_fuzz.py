"""Every Fabric route fuzzed through its generated OpenAPI document: never a 5xx, every JSON
error is the envelope, nothing hangs. Drawn with and without credentials."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import routefuzz
from fabric_server import ALICE, FULL_KEY, SEED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.embedded import EmulatorHandle, run_in_thread

# Streams that stay open by design; each is exercised by the SDK tests instead.
ENDLESS = {"/v1/events/stream"}


@pytest.fixture(scope="module")
def handle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    state = tmp_path_factory.mktemp("fabric-fuzz")
    with run_in_thread(SEED, state_dir=state, tls_enabled=False, services=("fabric",)) as running:
        yield running


@pytest.fixture(scope="module")
def document(handle: EmulatorHandle) -> dict[str, Any]:
    full: dict[str, Any] = httpx.get(f"{handle.url('fabric')}/_emulate/openapi.json").json()
    full["paths"] = {p: item for p, item in full["paths"].items() if p not in ENDLESS}
    return full


def test_the_document_covers_every_seed_route(document: dict[str, Any]) -> None:
    assert {"/v1/jobs", "/v1/workflow-runs/{id}/cancel", "/v1/assets/{id}", "/healthz"} <= set(
        document["paths"]
    )
    jobs = document["paths"]["/v1/jobs"]["post"]
    assert routefuzz.required_error_keys(jobs) == {"meta", "context", "data", "error", "links"}


credentials = st.sampled_from(
    [
        {},
        {"X-Principal-Id": ALICE},
        {"Authorization": f"Bearer {FULL_KEY}"},
        {"X-Principal-Id": "x"},
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_every_route(
    handle: EmulatorHandle, document: dict[str, Any], data: st.DataObject
) -> None:
    response = routefuzz.exercise(
        data,
        handle.url("fabric"),
        document,
        segments=st.text(min_size=1, max_size=8) | st.uuids().map(str),
        headers=credentials,
    )
    fabric_route = response.request.url.path.startswith("/v1/")
    if fabric_route and response.headers.get("content-type", "").startswith("application/json"):
        assert response.headers.get("x-request-id")


def test_unknown_routes_and_methods_are_envelopes(handle: EmulatorHandle) -> None:
    base = handle.url("fabric")
    missing = httpx.get(f"{base}/v1/workflows/run", headers={"X-Principal-Id": ALICE})
    wrong = httpx.put(f"{base}/v1/jobs", headers={"X-Principal-Id": ALICE})
    for response, status, code in ((missing, 404, "not_found"), (wrong, 405, "method_not_allowed")):
        body = response.json()
        assert response.status_code == status
        assert set(body) == {"meta", "context", "data", "error", "links"}
        assert body["error"]["code"] == code
        assert body["meta"]["request_id"] == response.headers["x-request-id"]


def test_trailing_slash_is_not_redirected(handle: EmulatorHandle) -> None:
    response = httpx.get(f"{handle.url('fabric')}/v1/me/", headers={"X-Principal-Id": ALICE})
    assert response.status_code == 404
