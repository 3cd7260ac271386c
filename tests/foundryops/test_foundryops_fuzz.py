"""Property-based fuzzing of every FoundryOps route: no input gets a 5xx, every error has the
FoundryOps error shape, and the server still answers afterwards (HTTP/1.1 and h2c)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from foundryops_support import API_KEY, seed_with
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.embedded import EmulatorHandle, run_in_thread


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmulatorHandle, str, list[tuple[str, str]]]]:
    seed = seed_with(uploads={"max_bytes": 4096})
    with run_in_thread(seed, tls_enabled=False, services=("foundryops",)) as handle:
        url = handle.url("foundryops")
        document = httpx.get(f"{url}/_emulate/openapi.json", timeout=10).json()
        routes = [
            (method, path)
            for path, item in sorted(document["paths"].items())
            for method in sorted(item)
            if path != "/_emulate/reset"
        ]
        yield handle, url, routes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
known = st.fixed_dictionaries(
    {},
    optional={
        "snapshot_id": st.sampled_from(["dss_snapshot1", "dss_x", "", 5]),
        "dataset_id": st.sampled_from(["ds_demo", "ds_x", None]),
        "record": json_values | st.just({"company_name": "Acme", "domain": "acme.com"}),
        "records": st.lists(json_values, max_size=3),
        "options": json_values | st.just({"profile": "high_recall", "top_n": 2}),
        "name": json_values,
        "schema": json_values | st.just({"a": "int"}),
        "source_key": st.text(max_size=8),
        "output_format": st.sampled_from(["csv", "parquet", "xml", 1]),
        "callback_url": st.sampled_from(["http://127.0.0.1:1/x", "ftp://x", "nope", 7]),
        "strict": json_values,
    },
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    known.map(lambda value: json.dumps(value).encode()),
    st.just(b"[" * 5000 + b"]" * 5000),
    st.just(b'{"truncated": '),
)
segments = st.one_of(
    st.sampled_from(["ds_demo", "dss_snapshot1", "job_x", "sk_x", "art_x", "..", "%00"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1,
            max_size=12),
)  # fmt: skip
auth = st.sampled_from(["", f"Bearer {API_KEY}", f"Bearer {API_KEY}", "Bearer nope", "Basic x"])


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_breaks_a_route(
    server: tuple[EmulatorHandle, str, list[tuple[str, str]]], data: st.DataObject
) -> None:
    _, url, routes = server
    method, path = data.draw(st.sampled_from(routes))
    target = re.sub(r"\{([^}]+)\}", lambda m: quote(data.draw(segments), safe="") or "x", path)
    headers = {"Content-Type": "application/json"}
    if token := data.draw(auth):
        headers["Authorization"] = token
    if data.draw(st.booleans()):
        headers["Idempotency-Key"] = data.draw(st.sampled_from(["k", "k2", "x" * 300]))
    params = data.draw(
        st.dictionaries(
            st.sampled_from(["purpose", "offset", "limit", "expires", "signature"]),
            st.text(max_size=8),
            max_size=2,
        )
    )
    body = data.draw(bodies) if method in ("post", "put") else b""
    http2 = data.draw(st.booleans())
    with httpx.Client(timeout=10, http1=not http2, http2=http2) as client:
        response = client.request(
            method.upper(), url + target, headers=headers, params=params, content=body
        )
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    platform = path.startswith("/_emulate/") and not path.startswith("/_emulate/foundryops/")
    if response.status_code >= 400 and not platform:  # the platform's routes have their own
        error = response.json()
        assert set(error) == {"error", "correlation_id", "request_id"}, response.text[:300]
        assert set(error["error"]) == {"code", "message", "details"}
        assert API_KEY not in response.text


def test_still_serving_after_fuzzing(
    server: tuple[EmulatorHandle, str, list[tuple[str, str]]],
) -> None:
    _, url, _ = server
    assert httpx.get(f"{url}/_emulate/health", timeout=10).status_code == 200
