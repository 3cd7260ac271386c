"""Raw routes are matched through an index (by segment count, then by the literal segment that
tells the routes apart best): the route chosen must be the first in declared order that
matches, as a scan of the whole list would choose, with parameters, literal-over-parameter
order, 405 with the allowed methods, and the fallback for paths no route has."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

from emulator.platform.errors import FamilyMap
from emulator.web.rawasgi import RawDispatcher, RawRequest, RawRoute

PATTERNS = [
    ("GET", "/"),
    ("GET", "/v1/jobs"),
    ("GET", "/v2/jobs"),
    ("GET", "/{org}/settings"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/usage"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/{kind}/{item}/events"),
    ("DELETE", "/v1/teams/{team_id}"),
    ("GET", "/v1/teams/{team_id}/members/{user}"),
    ("GET", "/{anything}/teams/{team_id}/members/{user}"),
    ("GET", "/api/v2/ontologies/{ontology}/objects/{type}"),
    ("GET", "/api/v2/ontologies/{ontology}/actions/{action}"),
]
SEGMENTS = ["", "v1", "jobs", "usage", "teams", "members", "events", "x", "api", "v2"]
SEGMENTS += ["ontologies", "objects", "actions", "j1", "settings"]


def route(method: str, pattern: str) -> RawRoute:
    async def handler(request: RawRequest) -> None:
        body = json.dumps({"route": f"{method} {pattern}", "params": request.params})
        await request.respond(200, body.encode(), [(b"content-type", b"application/json")])

    return RawRoute(method, pattern, handler)


def scan(method: str, path: str) -> tuple[int, Any]:
    """What a scan of the whole list in declared order answers."""
    parts = path.split("/")[1:]
    allowed = []
    for candidate in ROUTES:
        params = candidate.match(parts)
        if params is None:
            continue
        if candidate.method == method:
            return 200, {"route": f"{method} {candidate.pattern}", "params": params}
        allowed.append(candidate.method)
    return (405, sorted(set(allowed))) if allowed else (404, None)


ROUTES = [route(method, pattern) for method, pattern in PATTERNS]


async def fallback(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def dispatch(app: RawDispatcher, method: str, path: str) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode()}
    scope |= {"query_string": b"", "headers": []}
    await app(scope, receive, send)
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    if status == 200:
        return status, json.loads(body)
    if status == 405:
        allow = dict(sent[0]["headers"])[b"allow"].decode()
        return status, allow.split(", ")
    return status, None


def paths() -> list[str]:
    """Every path of up to three of SEGMENTS, and a fixed sample of longer ones."""
    short = [p for n in range(1, 4) for p in itertools.product(SEGMENTS, repeat=n)]
    rng = random.Random(5)
    longer = [tuple(rng.choices(SEGMENTS, k=rng.randint(4, 6))) for _ in range(3000)]
    # The longer patterns' own shapes, with a parameter filled in, must be among them.
    longer += [("v1", "teams", "t1", "members", "u1"), ("z", "teams", "t", "members", "u")]
    longer += [("api", "v2", "ontologies", "o", "objects", "t")]
    longer += [("api", "v2", "ontologies", "o", "actions", "a")]
    return ["/" + "/".join(parts) for parts in short + longer]


async def test_the_index_chooses_what_a_scan_of_every_route_would() -> None:
    app = RawDispatcher(fallback, ROUTES, FamilyMap())
    answers: set[int] = set()
    for path in paths():
        for method in ("GET", "POST", "DELETE"):
            answer = await dispatch(app, method, path)
            assert answer == scan(method, path), (method, path)
            answers.add(answer[0])
    assert answers == {200, 404, 405}
