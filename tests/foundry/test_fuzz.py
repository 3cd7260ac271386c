"""Property-based fuzzing of every route in /_emulate/openapi.json: no input breaks it.

Requests go over HTTP/1.1 and h2c alike. Invariants: no 5xx (but the documented 504 of a
synchronous execute that times out), every error is JSON in the family the route declares,
nothing hangs (each request is bounded), and the server still answers afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import routefuzz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.embedded import EmulatorHandle, run_in_thread

SEED: dict[str, Any] = {
    "tokens": {
        "fuzz-token": {"username": "jane", "scopes": ["api:admin-read", "api:ontologies-read"]}
    },
    "foundry": {
        "users": [{"username": "jane"}],
        "oauth_clients": [
            {
                "client_id": "fuzz-client",
                "client_secret": "fuzz-secret",
                "redirect_uris": ["http://localhost/cb"],
            }
        ],
        "ontologies": [{"api_name": "o", "queries": [{"api_name": "q", "result": 1}]}],
        "compute_modules": {
            "runtimes": [{"runtime_id": "r", "module_auth_token": "fuzz-module-token"}],
            "deployed_apps": [
                {"deployed_app_rid": "ri.foundry.main.deployed-app.fuzz", "runtime_id": "r"}
            ],
            "limits": {
                "poll_timeout": 0.05,
                "execute_timeout": 0.2,
                "job_timeout": 1,
                "queue_depth": 50,
            },
        },
    },
}
FAMILY_KEYS = {
    "conjure": {"errorCode", "errorName", "errorDescription", "errorInstanceId", "parameters"},
    "oauth": {"error", "error_description"},
}
# Synchronous execute answers 504 job_timeout by design when no runtime answers in time.
ALLOWED_5XX = {
    (
        "post",
        "/contour-backend-multiplexer/api/module-group-multiplexer/compute-modules/jobs/execute",
    ): {504}
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[EmulatorHandle, dict[str, Any]]]:
    with run_in_thread(SEED, tls_enabled=False, max_body_bytes=64 * 1024) as handle:
        document = httpx.get(f"{handle.http_url}/_emulate/openapi.json", timeout=10).json()
        yield handle, document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in sorted(document["paths"].items())
        for method, operation in sorted(item.items())
        if path not in ("/_emulate/reset",)  # resetting mid-fuzz is legal but hides state bugs
    ]


bodies = st.one_of(
    routefuzz.bodies,
    st.just(b"x" * (80 * 1024)),  # over the 64 KiB body limit of this server
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
        "text/plain",
        "",
        "multipart/form-data; boundary=x",
    ]
)
auth_headers = st.sampled_from(
    ["", "Bearer fuzz-token", "Bearer nope", "Basic Zm9vOmJhcg==", "Bearer", "bearer  fuzz-token"]
)
module_tokens = st.sampled_from(["", "fuzz-module-token", "wrong", "fuzz-token"])
segments = st.one_of(
    st.sampled_from(
        ["r", "o", "q", "ri.foundry.main.deployed-app.fuzz", "fuzz-client", "..", "%00"]
    ),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=12
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_breaks_any_route(
    server: tuple[EmulatorHandle, dict[str, Any]], data: st.DataObject
) -> None:
    handle, document = server
    method, path, operation = data.draw(st.sampled_from(operations(document)))
    names = re.findall(r"\{([^}]+)\}", path)
    values = {name: data.draw(segments) for name in names}
    url = handle.http_url + routefuzz.fill(path, values)
    headers = {}
    if auth := data.draw(auth_headers):
        headers["Authorization"] = auth
    if module := data.draw(module_tokens):
        headers["Module-Auth-Token"] = module
    if content_type := data.draw(content_types):
        headers["Content-Type"] = content_type
    params = data.draw(
        st.dictionaries(
            st.sampled_from(["pageSize", "pageToken", "preview", "limit", "x"]),
            st.text(max_size=8),
            max_size=2,
        )
    )
    body = data.draw(bodies) if method in ("post", "put", "patch", "delete") else b""
    # HTTP/1.1, or h2c with prior knowledge: both of the emulator's HTTP servers are fuzzed.
    http2 = data.draw(st.booleans())
    with httpx.Client(timeout=10, http1=not http2, http2=http2) as client:
        response = client.request(method.upper(), url, headers=headers, params=params, content=body)
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    allowed = ALLOWED_5XX.get((method, path), set())
    assert response.status_code < 500 or response.status_code in allowed, (
        method,
        path,
        response.status_code,
        response.text[:300],
    )
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        family = operation["x-error-family"]
        style = "conjure" if family == "foundry" else "oauth"
        assert set(response.json()) >= FAMILY_KEYS[style], (method, path, response.text[:300])
    elif response.status_code >= 400:
        # Only the sign-in page's errors are HTML; every other error is JSON.
        assert response.headers.get("content-type", "").startswith("text/html"), (
            method,
            path,
            response.headers,
        )


def test_still_serving_after_fuzzing(server: tuple[EmulatorHandle, dict[str, Any]]) -> None:
    handle, _ = server
    assert httpx.get(f"{handle.http_url}/_emulate/health", timeout=10).status_code == 200
