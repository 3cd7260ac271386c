"""Fuzzing every route of a service's generated OpenAPI document (a helper, not a test).

A service's test draws requests with `exercise(data, base_url, document, ...)` inside its own
`@given(data=st.data())` test. Invariants checked for every answer: no 5xx (unless the route is
listed as allowed to), every JSON error carries the keys the route's error family declares in
the document (`x-error-family` and its schema), and nothing hangs (each request is bounded).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.just(b"\xff\xfe{not utf-8"),
    st.just(b'{"truncated": '),
)
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "application/octet-stream", ""]
)


def operations(
    document: Mapping[str, Any], skip: Iterable[str] = ("/_emulate/reset",)
) -> list[tuple[str, str, dict[str, Any]]]:
    skipped = set(skip)
    return [
        (method, path, operation)
        for path, item in sorted(document["paths"].items())
        for method, operation in sorted(item.items())
        if path not in skipped
    ]


def required_error_keys(operation: Mapping[str, Any]) -> set[str]:
    schema = operation["responses"]["default"]["content"]["application/json"]["schema"]
    return set(schema.get("required", ()))


def fill(path: str, values: Mapping[str, str]) -> str:
    def segment(match: re.Match[str]) -> str:
        return quote(values.get(match.group(1), "x"), safe="") or "x"

    return re.sub(r"\{([^}]+)\}", segment, path)


def exercise(
    data: st.DataObject,
    base_url: str,
    document: Mapping[str, Any],
    *,
    segments: st.SearchStrategy[str],
    headers: st.SearchStrategy[dict[str, str]] | None = None,
    allowed_5xx: Mapping[tuple[str, str], set[int]] | None = None,
    http2: bool | None = None,
) -> httpx.Response:
    """Send one drawn request to one drawn route and check the invariants."""
    method, path, operation = data.draw(st.sampled_from(operations(document)))
    names = re.findall(r"\{([^}]+)\}", path)
    values = {name: data.draw(segments) for name in names}
    request_headers = dict(data.draw(headers)) if headers is not None else {}
    if content_type := data.draw(content_types):
        request_headers["Content-Type"] = content_type
    params = data.draw(
        st.dictionaries(
            st.sampled_from(["limit", "cursor", "pageSize", "x"]), st.text(max_size=8), max_size=2
        )
    )
    body = data.draw(bodies) if method in ("post", "put", "patch", "delete") else b""
    use_h2 = data.draw(st.booleans()) if http2 is None else http2
    with httpx.Client(timeout=10, http1=not use_h2, http2=use_h2) as client:
        response = client.request(
            method.upper(),
            base_url + fill(path, values),
            headers=request_headers,
            params=params,
            content=body,
        )
    allowed = (allowed_5xx or {}).get((method, path), set())
    where = (method, path, response.status_code, response.text[:300])
    assert response.status_code < 500 or response.status_code in allowed, where
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith(
        "application/json"
    ):
        assert set(response.json()) >= required_error_keys(operation), where
    return response
