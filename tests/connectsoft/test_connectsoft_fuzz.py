"""Every ConnectSoft route from its OpenAPI document, fuzzed: never a 5xx, errors in the
service's problem shape, nothing hangs. With and without a valid bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import routefuzz
from connectsoft_builders import seed_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.embedded import EmulatorHandle, run_in_thread

# The event stream never ends by itself; it has its own test.
ENDLESS = ("/_emulate/connectsoft/events",)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    state = tmp_path_factory.mktemp("connectsoft-fuzz")
    with run_in_thread({"connectsoft": seed_data()}, state_dir=state, tls_enabled=False) as handle:
        yield handle


@pytest.fixture(scope="module")
def document(running: EmulatorHandle) -> dict[str, Any]:
    doc: dict[str, Any] = httpx.get(f"{running.url('connectsoft')}/_emulate/openapi.json").json()
    doc["paths"] = {p: item for p, item in doc["paths"].items() if p not in ENDLESS}
    return doc


@pytest.fixture(scope="module")
def bearer(running: EmulatorHandle) -> str:
    response = httpx.post(
        f"{running.url('connectsoft')}/connect/token",
        data={"grant_type": "client_credentials"},
        auth=("portal", "portal-secret-value"),
    )
    return str(response.json()["access_token"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_route_answers_5xx(
    running: EmulatorHandle, document: dict[str, Any], bearer: str, data: st.DataObject
) -> None:
    headers = st.sampled_from([{}, {"Authorization": f"Bearer {bearer}"}, {"Authorization": "x"}])
    segments = st.one_of(
        st.text(min_size=1, max_size=8),
        st.sampled_from(["env-9f1c2b7d", "module-reservations-api", "env-0therten"]),
    )
    response = routefuzz.exercise(
        data, running.url("connectsoft"), document, segments=segments, headers=headers
    )
    assert response.headers.get("cs-schema-version") == "1.0", (
        response.request.url,
        response.status_code,
    )
    assert "portal-secret-value" not in response.text
