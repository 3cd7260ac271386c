"""The request log keeps no secret and no long target (issue 16, defect 10)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from emulator.platform.errors import FamilyMap
from emulator.web.requestlog import MAX_TARGET, REDACTED, RequestLog

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
TOKEN = "foundry_Zx8kQ2mN4pR6tV8wY0aC2eG4iK6mO8qS"


async def logged(path: str, query: bytes = b"") -> tuple[str, str]:
    """What the log records of one request: (path, query)."""
    log = RequestLog(capacity=10)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query}
    await log.middleware(app, FamilyMap())(scope, None, ignore)
    (record,) = log.recent()
    return record.path, unquote(record.query)


@pytest.mark.parametrize(
    "query",
    [
        f"Authorization=Bearer%20{TOKEN}",
        "bearer=abc",
        "api_key=abc",
        "auth=abc",
        "jwt=abc",
        "X-Api-Key=abc",
        f"next={JWT}",
        f"q={TOKEN}",
    ],
)
async def test_a_secret_in_the_query_is_redacted_by_name_or_by_pattern(query: str) -> None:
    _, recorded = await logged("/x", f"page=2&{query}".encode())
    assert recorded.startswith("page=2&")
    assert recorded.endswith(f"={REDACTED}")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a;access_token=abc/b", f"/a;access_token={REDACTED}/b"),
        ("/a;page=2/b", "/a;page=2/b"),
        (f"/tokens/{TOKEN}/info", f"/tokens/{REDACTED}/info"),
        (f"/tokens/{JWT}", f"/tokens/{REDACTED}"),
        ("/api/v2/ontologies/my_ontology/objects", "/api/v2/ontologies/my_ontology/objects"),
    ],
)
async def test_a_secret_in_the_path_is_redacted(path: str, expected: str) -> None:
    recorded, _ = await logged(path)
    assert recorded == expected


async def test_long_targets_are_cut() -> None:
    path, query = await logged("/p" * 32768, b"a=" + b"b" * 65536)
    # The limit plus the marker, never the 64 KiB that came in.
    assert MAX_TARGET <= len(path) <= MAX_TARGET + 20
    assert MAX_TARGET <= len(query) <= MAX_TARGET + 20
