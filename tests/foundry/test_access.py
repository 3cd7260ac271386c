"""Who gets in where: every route of /_emulate/openapi.json against every credential state.

The route table below has one row per route; a route the emulator serves without a row fails
the test, so a new route cannot be forgotten. Each row says how the route authenticates:
`bearer` (Authorization: Bearer, with the scope and the 403 errorName it demands), `module`
(the runtime's Module-Auth-Token) or `none` (OAuth endpoints, runtime creation, the inspect
route and /_emulate/*: credentials are ignored, so every credential state is answered alike).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import httpx
import trio
from emulatorrun import StartEmulator

from emulator.platform.clock import ManualClock

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
APP = "ri.foundry.main.deployed-app.access"
ALL_SCOPES = [
    "api:admin-read",
    "api:ontologies-read",
    "api:connectivity-connection-read",
    "api:connectivity-connection-write",
]
SEED: dict[str, Any] = {
    "tokens": {
        "tok-full": {"username": "jane", "scopes": ALL_SCOPES},
        "tok-noscope": {"username": "jane", "scopes": []},
        "tok-expiring": {"username": "jane", "scopes": ALL_SCOPES, "expires_in": 60},
        "tok-revoked": {"username": "jane", "scopes": ALL_SCOPES},
    },
    "foundry": {
        "users": [{"username": "jane"}],
        "oauth_clients": [
            {
                "client_id": "access-client",
                "client_secret": "access-secret",
                "redirect_uris": ["http://localhost/cb"],
            }
        ],
        "ontologies": [{"api_name": "o", "queries": [{"api_name": "q", "result": 1}]}],
        "compute_modules": {
            "runtimes": [
                {"runtime_id": "r1", "module_auth_token": "mod-token-r1"},
                {"runtime_id": "r2", "module_auth_token": "mod-token-r2"},
            ],
            "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "r1"}],
            "limits": {"poll_timeout": 0.05, "execute_timeout": 0.2, "job_timeout": 1},
        },
    },
}


@attrs.frozen
class Row:
    """How one route authenticates, and a concrete request to it."""

    auth: str  # "bearer", "module" or "none"
    path: str
    family: str  # "conjure" or "oauth" (the error shape)
    scope: str | None = None
    denied: str = "PermissionDenied"
    body: bytes = b""
    content_type: str = "application/json"


def bearer(
    path: str,
    family: str = "conjure",
    *,
    scope: str | None = None,
    denied: str = "",
    body: bytes = b"",
) -> Row:
    return Row("bearer", path, family, scope, denied or "PermissionDenied", body)


def module(path: str, body: bytes = b"{}") -> Row:
    return Row("module", path, "oauth", body=body)


def open_route(path: str, body: bytes = b"", content_type: str = "application/json") -> Row:
    return Row("none", path, "oauth", body=body, content_type=content_type)


CONN = "/api/v2/connectivity/connections"
RID = "ri.magritte..source.missing"
FORM = "application/x-www-form-urlencoded"
TABLE: dict[tuple[str, str], Row] = {
    # Runtime side: the Module-Auth-Token of the runtime named in the path.
    ("GET", RUNTIMES + "/{runtime_id}/job"): module(RUNTIMES + "/r1/job", b""),
    ("GET", RUNTIMES + "/{runtime_id}/replicas/{replica}/job"): module(
        RUNTIMES + "/r1/replicas/a/job", b""
    ),
    ("POST", RUNTIMES + "/{runtime_id}/results/{job_id}"): module(
        RUNTIMES + "/r1/results/no-such-job"
    ),
    ("POST", RUNTIMES + "/{runtime_id}/replicas/{replica}/results/{job_id}"): module(
        RUNTIMES + "/r1/replicas/a/results/no-such-job"
    ),
    ("POST", RUNTIMES + "/{runtime_id}/schemas"): module(RUNTIMES + "/r1/schemas", b"[]"),
    ("POST", RUNTIMES + "/{runtime_id}/replicas/{replica}/schemas"): module(
        RUNTIMES + "/r1/replicas/a/schemas", b"[]"
    ),
    ("POST", RUNTIMES + "/{runtime_id}/restart"): module(RUNTIMES + "/r1/restart", b""),
    ("POST", RUNTIMES + "/{runtime_id}/replicas/{replica}/restart"): module(
        RUNTIMES + "/r1/replicas/a/restart", b""
    ),
    # No auth: creating a runtime session and inspecting a job are the emulator's own routes.
    ("POST", RUNTIMES): open_route(RUNTIMES, b'{"runtimeId": "r3"}'),
    ("GET", RUNTIMES + "/{runtime_id}/jobs/{job_id}"): open_route(RUNTIMES + "/r1/jobs/nope"),
    # Contour: any valid bearer token, no scope.
    ("POST", CONTOUR + "/compute-modules/jobs/execute"): bearer(
        CONTOUR + "/compute-modules/jobs/execute", "oauth", body=b"{}"
    ),
    ("POST", CONTOUR + "/deployed-apps/jobs"): bearer(
        CONTOUR + "/deployed-apps/jobs", "oauth", body=b"{}"
    ),
    ("PUT", CONTOUR + "/jobs/result/v2"): bearer(
        CONTOUR + "/jobs/result/v2", "oauth", body=b'{"id": "nope"}'
    ),
    ("GET", CONTOUR + "/jobs/{job_id}/status"): bearer(CONTOUR + "/jobs/nope/status", "oauth"),
    # Foundry platform API: Conjure errors, a scope and the SDK's errorName for the 403.
    ("GET", "/api/v2/admin/users/getCurrent"): bearer(
        "/api/v2/admin/users/getCurrent",
        scope="api:admin-read",
        denied="GetCurrentUserPermissionDenied",
    ),
    ("GET", "/api/v2/admin/enrollments/getCurrent"): bearer(
        "/api/v2/admin/enrollments/getCurrent",
        scope="api:admin-read",
        denied="GetCurrentEnrollmentPermissionDenied",
    ),
    ("POST", CONN): bearer(
        CONN,
        scope="api:connectivity-connection-write",
        denied="CreateConnectionPermissionDenied",
        body=b"{}",
    ),
    ("GET", CONN + "/{connection_rid}"): bearer(
        f"{CONN}/{RID}",
        scope="api:connectivity-connection-read",
        denied="GetConnectionPermissionDenied",
    ),
    ("GET", CONN + "/{connection_rid}/getConfiguration"): bearer(
        f"{CONN}/{RID}/getConfiguration",
        scope="api:connectivity-connection-read",
        denied="GetConfigurationPermissionDenied",
    ),
    ("POST", CONN + "/{connection_rid}/updateSecrets"): bearer(
        f"{CONN}/{RID}/updateSecrets",
        scope="api:connectivity-connection-write",
        denied="UpdateSecretsForConnectionPermissionDenied",
        body=b"{}",
    ),
    ("GET", "/api/v2/ontologies"): bearer(
        "/api/v2/ontologies", scope="api:ontologies-read", denied="ListOntologiesPermissionDenied"
    ),
    ("GET", "/api/v2/ontologies/{ontology}"): bearer(
        "/api/v2/ontologies/o", scope="api:ontologies-read", denied="GetOntologyPermissionDenied"
    ),
    ("POST", "/api/v2/ontologies/{ontology}/queries/{query_api_name}/execute"): bearer(
        "/api/v2/ontologies/o/queries/q/execute",
        scope="api:ontologies-read",
        denied="ExecuteQueryPermissionDenied",
        body=b"{}",
    ),
    # Multipass: the current user (OAuth-shaped errors, any valid token).
    ("GET", "/multipass/api/me"): bearer("/multipass/api/me", "oauth"),
    # OAuth endpoints authenticate the client (or the signed-in user), never a bearer token.
    ("GET", "/multipass/api/oauth2/authorize"): open_route("/multipass/api/oauth2/authorize"),
    ("POST", "/multipass/api/oauth2/authorize/callback"): open_route(
        "/multipass/api/oauth2/authorize/callback", b"", FORM
    ),
    ("POST", "/multipass/api/oauth2/token"): open_route(
        "/multipass/api/oauth2/token", b"grant_type=client_credentials", FORM
    ),
    ("POST", "/multipass/api/oauth2/revoke_token"): open_route(
        "/multipass/api/oauth2/revoke_token", b"token=unknown", FORM
    ),
    # The emulator's control routes.
    ("GET", "/_emulate/"): open_route("/_emulate/"),
    ("GET", "/_emulate/foundry/compute-modules/jobs/{job_id}"): open_route(
        "/_emulate/foundry/compute-modules/jobs/nope"
    ),
    ("GET", "/_emulate/health"): open_route("/_emulate/health"),
    ("GET", "/_emulate/openapi.json"): open_route("/_emulate/openapi.json"),
    ("GET", "/_emulate/requests"): open_route("/_emulate/requests"),
    ("DELETE", "/_emulate/requests"): open_route("/_emulate/requests"),
    ("POST", "/_emulate/reset"): open_route("/_emulate/reset"),
    ("GET", "/_emulate/state"): open_route("/_emulate/state"),
}

# Credential states: the headers each one sends.
BEARER_STATES: dict[str, dict[str, str]] = {
    "no token": {},
    "unknown token": {"Authorization": "Bearer not-a-token"},
    "expired": {"Authorization": "Bearer tok-expiring"},
    "revoked": {"Authorization": "Bearer tok-revoked"},
    "missing scope": {"Authorization": "Bearer tok-noscope"},
    "module token as bearer": {"Authorization": "Bearer mod-token-r1"},
    "valid": {"Authorization": "Bearer tok-full"},
}
MODULE_STATES: dict[str, dict[str, str]] = {
    "no token": {},
    "unknown token": {"Module-Auth-Token": "not-a-token"},
    "wrong runtime's token": {"Module-Auth-Token": "mod-token-r2"},
    "bearer token as module token": {"Module-Auth-Token": "tok-full"},
    "bearer header instead": {"Authorization": "Bearer tok-full"},
    "valid": {"Module-Auth-Token": "mod-token-r1"},
}
ALL_STATES = {**BEARER_STATES, **{f"module: {k}": v for k, v in MODULE_STATES.items()}}


def expected_bearer(row: Row, state: str) -> tuple[int, str] | None:
    """The documented (status, code) for a bearer route, or None: let in."""
    if state == "valid" or (state == "missing scope" and row.scope is None):
        return None
    if state == "missing scope":
        return 403, row.denied if row.family == "conjure" else "insufficient_scope"
    if row.family == "conjure":
        return 401, "MissingCredentials" if state == "no token" else "InvalidCredentials"
    return 401, "invalid_token"


def expected_module(state: str) -> tuple[int, str] | None:
    if state == "valid":
        return None
    if state in ("no token", "bearer header instead"):
        return 401, "missing_module_auth_token"
    return 401, "invalid_module_auth_token"


def check_error(row: Row, response: httpx.Response, status: int, code: str, label: str) -> None:
    assert response.status_code == status, (label, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), label
    body = response.json()
    if row.family == "conjure":
        assert set(body) == {
            "errorCode",
            "errorName",
            "errorDescription",
            "errorInstanceId",
            "parameters",
        }, label
        assert body["errorName"] == code, (label, body)
        assert body["errorCode"] == {401: "UNAUTHORIZED", 403: "PERMISSION_DENIED"}[status]
    else:
        assert set(body) == {"error", "error_description"}, (label, body)
        assert body["error"] == code, (label, body)
    if status == 401:
        assert response.headers.get("www-authenticate", "").startswith("Bearer") or (
            row.auth == "module"
        ), label


async def started(start_emulator: StartEmulator) -> tuple[Any, httpx.AsyncClient]:
    clock = ManualClock()
    running = await start_emulator(SEED, clock=clock, tls_enabled=False)
    async with running.client() as setup:
        revoked = await setup.post(
            "/multipass/api/oauth2/revoke_token",
            data={
                "token": "tok-revoked",
                "client_id": "access-client",
                "client_secret": "access-secret",
            },
        )
    assert revoked.status_code == 200, revoked.text
    clock.advance(120)  # tok-expiring (60 s) is now expired; the others never expire
    return running, running.client()


async def send(
    client: httpx.AsyncClient, method: str, row: Row, headers: Mapping[str, str]
) -> httpx.Response:
    with trio.fail_after(10):
        return await client.request(
            method,
            row.path,
            content=row.body or None,
            headers={"Content-Type": row.content_type, **headers} if row.body else dict(headers),
        )


async def test_every_route_has_a_row(start_emulator: StartEmulator) -> None:
    running = await start_emulator(SEED, tls_enabled=False)
    async with running.client() as client:
        document = (await client.get("/_emulate/openapi.json")).json()
    served = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served == set(TABLE), (
        f"routes without a row: {sorted(served - set(TABLE))}; "
        f"rows for no route: {sorted(set(TABLE) - served)}"
    )
    # The error family the document declares matches the row's error shape.
    for (method, path), row in TABLE.items():
        family = document["paths"][path][method.lower()]["x-error-family"]
        if row.auth != "none":
            assert (family == "foundry") == (row.family == "conjure"), (method, path, family)


async def test_bearer_routes_every_credential_state(start_emulator: StartEmulator) -> None:
    _running, client = await started(start_emulator)
    checked = 0
    async with client:
        for (method, template), row in TABLE.items():
            if row.auth != "bearer":
                continue
            for state, headers in BEARER_STATES.items():
                label = f"{method} {template} [{state}]"
                response = await send(client, method, row, headers)
                expected = expected_bearer(row, state)
                if expected is None:
                    assert response.status_code not in (401, 403), (label, response.text[:300])
                    assert response.status_code < 500 or response.status_code == 504, label
                else:
                    check_error(row, response, *expected, label)
                checked += 1
    assert checked == sum(r.auth == "bearer" for r in TABLE.values()) * len(BEARER_STATES)


async def test_module_routes_every_credential_state(start_emulator: StartEmulator) -> None:
    _running, client = await started(start_emulator)
    async with client:
        for (method, template), row in TABLE.items():
            if row.auth != "module":
                continue
            for state, headers in MODULE_STATES.items():
                label = f"{method} {template} [{state}]"
                response = await send(client, method, row, headers)
                expected = expected_module(state)
                if expected is None:
                    assert response.status_code in (200, 204, 404), (label, response.text[:300])
                    if response.status_code == 404:  # the job does not exist: not an auth error
                        assert response.json()["error"] == "not_found", label
                else:
                    check_error(row, response, *expected, label)
            # A runtime the emulator does not know is a 404 whatever the token.
            unknown = attrs.evolve(row, path=row.path.replace("/r1/", "/nope/", 1))
            response = await send(client, method, unknown, MODULE_STATES["valid"])
            assert response.status_code == 404, (method, template, response.text)
            assert response.json()["error"] == "not_found"


async def test_open_routes_ignore_credentials(start_emulator: StartEmulator) -> None:
    """Rows with no auth: every credential state gets the answer no credentials get."""
    _running, client = await started(start_emulator)
    async with client:
        rows = sorted(
            ((key, row) for key, row in TABLE.items() if row.auth == "none"),
            key=lambda item: item[0][1] == "/_emulate/reset",  # reset last: it forgets state
        )
        for (method, template), row in rows:
            baseline = await send(client, method, row, {})
            assert baseline.status_code < 500, (method, template, baseline.text[:300])
            if template == "/_emulate/reset":
                continue
            for state, headers in ALL_STATES.items():
                response = await send(client, method, row, headers)
                assert response.status_code == baseline.status_code, (
                    method,
                    template,
                    state,
                    response.status_code,
                    response.text[:200],
                )
                assert response.status_code not in (401, 403) or template.startswith(
                    "/multipass/api/oauth2/"  # client authentication, not the bearer token
                ), (method, template, state)


async def test_status_and_result_belong_to_the_submitter(start_emulator: StartEmulator) -> None:
    """Another principal's valid token does not see a job (404, not 403: no existence leak)."""
    seed = {**SEED, "tokens": {**SEED["tokens"], "tok-bob": {"username": "bob", "scopes": []}}}
    seed["foundry"] = {**SEED["foundry"], "users": [{"username": "jane"}, {"username": "bob"}]}
    running = await start_emulator(seed, tls_enabled=False)
    async with running.client() as client:
        submitted = await client.post(
            CONTOUR + "/deployed-apps/jobs",
            json={"deployedAppRid": APP, "queryType": "add", "query": {}},
            headers={"Authorization": "Bearer tok-full"},
        )
        assert submitted.status_code == 200, submitted.text
        job = submitted.json()["id"]
        bob = {"Authorization": "Bearer tok-bob"}
        status = await client.get(f"{CONTOUR}/jobs/{job}/status", headers=bob)
        assert status.status_code == 404
        assert status.json()["error"] == "not_found"
        result = await client.put(f"{CONTOUR}/jobs/result/v2", json={"id": job}, headers=bob)
        assert result.status_code == 404
        assert result.json()["error"] == "not_found"
        own = await client.get(
            f"{CONTOUR}/jobs/{job}/status", headers={"Authorization": "Bearer tok-full"}
        )
        assert own.status_code == 200
