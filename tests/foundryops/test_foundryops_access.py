"""Who gets in where on FoundryOps: every route of its OpenAPI document against every credential
state, and a secret scan over everything those requests produced.

The table below has one row per route; a route the service serves without a row (or a row for
a route it no longer serves) fails the test, so a new route cannot be forgotten. A row says
whether the route wants an API key and which scope. Credential states: no Authorization, a
malformed header, an unknown key, a key without the route's scope, a key with every scope.
Expected: 401 UNAUTHORIZED for the first three on a keyed route, 403 FORBIDDEN naming the
scope for the fourth, and neither for the last (or on a route that takes no key, such as the
signed upload URL, which has its own 403 INVALID_SIGNATURE).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import attrs
import pytest
from foundryops_support import seed_with

FULL = "fo_access_full_key_0001"
JOBS_ONLY = "fo_access_jobs_key_0002"
NO_SCOPE = "fo_access_bare_key_0003"
CALLBACK_SECRET = "whsec_access_matrix_secret_value"
SECRETS = (FULL, JOBS_ONLY, NO_SCOPE, CALLBACK_SECRET)


@attrs.frozen
class Row:
    keyed: bool
    scope: str | None = None


ROUTES: dict[tuple[str, str], Row] = {
    ("get", "/api/v2/datasets"): Row(True, "datasets"),
    ("post", "/api/v2/datasets"): Row(True, "datasets"),
    ("get", "/api/v2/datasets/{dataset_id}"): Row(True, "datasets"),
    ("post", "/api/v2/datasets/{dataset_id}/append"): Row(True, "datasets"),
    ("post", "/api/v2/datasets/{dataset_id}/activate"): Row(True, "datasets"),
    ("get", "/api/v2/artifacts/{artifact_id}"): Row(True),
    ("get", "/api/v2/jobs/{job_id}"): Row(True, "jobs"),
    ("get", "/api/v2/jobs/{job_id}/results"): Row(True, "jobs"),
    ("post", "/api/v2/match/record"): Row(True, "jobs"),
    ("post", "/api/v2/match/batch"): Row(True, "jobs"),
    ("post", "/api/v2/match/files"): Row(True, "jobs"),
    # purpose=match (the default) needs jobs; purpose=dataset needs datasets.
    ("post", "/api/v2/uploads/presign"): Row(True, "jobs"),
    ("put", "/uploads/{storage_key}"): Row(False),
    ("get", "/metrics"): Row(False),
    ("get", "/_emulate/foundryops/audit"): Row(False),
    ("get", "/_emulate/foundryops/decisions"): Row(False),
    ("get", "/_emulate/foundryops/deliveries"): Row(False),
    ("get", "/_emulate/foundryops/jobs"): Row(False),
    ("get", "/_emulate/foundryops/credits"): Row(False),
}
STATES: dict[str, dict[str, str]] = {
    "none": {},
    "malformed": {"Authorization": FULL},
    "unknown": {"Authorization": "Bearer fo_not_a_key_at_all_999"},
    "without scope": {"Authorization": f"Bearer {NO_SCOPE}"},
    "full": {"Authorization": f"Bearer {FULL}"},
}


def seed() -> dict[str, Any]:
    return seed_with(
        api_keys=[
            {"key": FULL, "id": "full", "scopes": ["datasets", "jobs", "webhooks"]},
            {"key": JOBS_ONLY, "id": "jobs", "scopes": ["jobs"]},
            {"key": NO_SCOPE, "id": "bare", "scopes": []},
        ],
        callbacks={"secret": CALLBACK_SECRET, "allowed_hosts": ["127.0.0.1"]},
    )


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_route_against_every_credential_state(
    start_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    running = await start_emulator(seed(), services=("foundryops",), tls_enabled=False)
    seen: list[str] = []
    async with running.client(service="foundryops") as http:
        document = (await http.get("/_emulate/openapi.json")).json()
        served = {
            (method, path)
            for path, item in document["paths"].items()
            for method in item
            if not path.startswith("/_emulate/") or path.startswith("/_emulate/foundryops/")
        }
        assert served == set(ROUTES), served ^ set(ROUTES)
        for (method, path), row in sorted(ROUTES.items()):
            for state, headers in STATES.items():
                answer = await http.request(
                    method.upper(),
                    concrete(path),
                    headers={"Content-Type": "application/json", **headers},
                    content=b"{}" if method in ("post", "put") else b"",
                )
                seen.append(f"{answer.headers}\n{answer.text}")
                where = (method, path, state, answer.status_code, answer.text[:200])
                code = answer.json()["error"]["code"] if answer.status_code >= 400 else None
                if not row.keyed or state == "full":
                    # Let in (whatever else the request gets: 404, 400, a refused signature).
                    assert code not in ("UNAUTHORIZED", "FORBIDDEN"), where
                elif state in ("none", "malformed", "unknown"):
                    assert (answer.status_code, code) == (401, "UNAUTHORIZED"), where
                elif row.scope is not None:
                    assert (answer.status_code, code) == (403, "FORBIDDEN"), where
                    assert answer.json()["error"]["details"]["required_scope"] == row.scope
                else:
                    assert code not in ("UNAUTHORIZED", "FORBIDDEN"), where
        for control in ("/_emulate/state", "/_emulate/requests", "/_emulate/foundryops/audit"):
            answer = await http.get(control)
            seen.append(f"{answer.headers}\n{answer.text}")
    # No key and no callback secret in any answer, control route or log line.
    everything = "\n".join([*seen, *(record.getMessage() for record in caplog.records)])
    for secret in SECRETS:
        assert secret not in everything, secret
