"""Who gets in where on Fabric: every route of its OpenAPI document against every credential
state, following the reference's scope table (fabric-control-plane.md section 4.3).

The table has one row per route; a served route without a row (or a row for a route no longer
served) fails the test. A row says what a key needs: `PUBLIC` (anyone, even with no
credentials), `ANY` (any valid key or caller), a scope name, `FULL` (full-access keys only) or
`PERSON` (no key at all: creating an organization, accepting an invitation).
States: no credentials, an unknown `fab_` key, a key with only `jobs:read`, a full-access key.
Expected: 401 `unauthorized` for the first two (but no credentials on a public route is let
in), 403 `forbidden` naming the missing permission for the scoped key where its scope does not
reach, and neither otherwise (whatever else the request gets: 404 for the placeholder ids, 400
for the empty bodies, or a 403 of the role model, which the tenancy tests cover).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fabric_server import FULL_KEY, READ_KEY, SEED

from emulator.embedded import run_in_thread

PUBLIC, ANY, FULL = "public", "any", "full"
# A person's own act (a JWT or the dev header): no API key may do it, not even a full one.
PERSON = "person"
ROUTES: dict[tuple[str, str], str] = {
    ("get", "/healthz"): PUBLIC,
    ("get", "/readyz"): PUBLIC,
    ("get", "/v1/health"): PUBLIC,
    ("get", "/openapi.json"): PUBLIC,
    ("get", "/v1/me"): ANY,
    ("get", "/v1/me/organizations"): ANY,
    ("get", "/v1/me/teams"): ANY,
    ("get", "/v1/me/permissions"): ANY,
    ("post", "/v1/authz/check"): ANY,
    ("post", "/v1/authz/check-batch"): ANY,
    ("get", "/v1/providers"): ANY,
    ("get", "/v1/events/stream"): ANY,
    ("post", "/v1/jobs"): "jobs:write",
    ("get", "/v1/jobs"): "jobs:read",
    ("get", "/v1/jobs/{id}"): "jobs:read",
    ("get", "/v1/jobs/{id}/usage"): "jobs:read",
    ("get", "/v1/jobs/{id}/events"): "jobs:read",
    ("post", "/v1/providers/execute"): "providers:execute",
    ("post", "/v1/providers/execute/stream"): "providers:execute",
    ("post", "/v1/providers/estimate"): "providers:execute",
    ("post", "/v1/workflow-definitions"): "workflows:write",
    ("get", "/v1/workflow-definitions"): "workflows:read",
    ("get", "/v1/workflow-definitions/{id}"): "workflows:read",
    ("post", "/v1/workflow-runs"): "workflows:write",
    ("get", "/v1/workflow-runs/{id}"): "workflows:read",
    ("get", "/v1/workflow-runs/{id}/events"): "workflows:read",
    ("post", "/v1/workflow-runs/{id}/start"): "workflows:write",
    ("post", "/v1/workflow-runs/{id}/cancel"): "workflows:write",
    ("post", "/v1/organizations"): PERSON,
    ("get", "/v1/organizations/{id}"): FULL,
    ("get", "/v1/organizations/{id}/members"): FULL,
    ("get", "/v1/organizations/{id}/teams"): FULL,
    ("get", "/v1/organizations/{id}/usage"): FULL,
    ("get", "/v1/organizations/{id}/usage/records"): FULL,
    ("get", "/v1/organizations/{id}/audit-logs"): FULL,
    ("post", "/v1/teams"): FULL,
    ("get", "/v1/teams/{id}"): FULL,
    ("post", "/v1/invitations"): FULL,
    ("post", "/v1/invitations/{id}/accept"): PERSON,
    ("post", "/v1/invitations/{id}/revoke"): FULL,
    ("post", "/v1/api-keys"): FULL,
    ("get", "/v1/api-keys"): FULL,
    ("get", "/v1/api-keys/{id}"): FULL,
    ("delete", "/v1/api-keys/{id}"): FULL,
    ("post", "/v1/api-keys/{id}/disable"): FULL,
    ("post", "/v1/assets"): FULL,
    ("get", "/v1/assets/{id}"): FULL,
    ("get", "/v1/assets/{id}/download"): FULL,
    ("get", "/v1/audit-logs"): FULL,
}
# Streams that stay open on success: asked for, but only their refusals are read whole.
ENDLESS = {"/v1/events/stream"}
STATES: dict[str, dict[str, str]] = {
    "none": {},
    "unknown key": {"Authorization": "Bearer fab_UnknownKeyForTheAccessMatrix0"},
    "jobs:read key": {"Authorization": f"Bearer {READ_KEY}"},
    "full key": {"Authorization": f"Bearer {FULL_KEY}"},
}


def expected(need: str, state: str) -> str | None:
    """The refusal (`unauthorized`, `forbidden`) a state gets on a route, or None."""
    if state == "none":
        return None if need == PUBLIC else "unauthorized"
    if state == "unknown key":
        # The chain's first match wins: a bad key is refused, never treated as anonymous.
        return "unauthorized"
    if state == "jobs:read key":
        return None if need in (PUBLIC, ANY, "jobs:read") else "forbidden"
    return "forbidden" if need == PERSON else None


@pytest.fixture(scope="module")
def fabric_url(tmp_path_factory: pytest.TempPathFactory) -> Any:
    state = tmp_path_factory.mktemp("fabric-access")
    with run_in_thread(SEED, state_dir=state, tls_enabled=False, services=("fabric",)) as handle:
        yield handle.url("fabric")


def test_the_table_names_every_route(fabric_url: str) -> None:
    document = httpx.get(f"{fabric_url}/_emulate/openapi.json").json()
    served = {
        (method, path)
        for path, item in document["paths"].items()
        for method in item
        if not path.startswith("/_emulate/") and path != "/v1/events/ws"
    }
    assert served == set(ROUTES), served ^ set(ROUTES)


@pytest.mark.parametrize("state", list(STATES))
def test_every_route_against_a_credential_state(fabric_url: str, state: str) -> None:
    wrong = []
    with httpx.Client(base_url=fabric_url, timeout=10) as client:
        for (method, path), need in sorted(ROUTES.items()):
            url = re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-00000000abcd", path)
            headers = {"Content-Type": "application/json", **STATES[state]}
            body = b"{}" if method in ("post", "put", "patch") else b""
            with client.stream(method.upper(), url, headers=headers, content=body) as answer:
                refusal = None
                if answer.status_code in (401, 403):
                    answer.read()
                    error = answer.json()["error"]
                    # A key-scope refusal names the permission; other 403s are the role model
                    # (a key acts for one organization: it cannot create another, and so on).
                    scoped = "Insufficient permissions" in error["message"]
                    if error["code"] == "unauthorized" or scoped:
                        refusal = error["code"]
                elif path not in ENDLESS:
                    answer.read()
            want = expected(need, state)
            if refusal != want:
                wrong.append((method, path, need, answer.status_code, refusal, want))
    assert wrong == []
