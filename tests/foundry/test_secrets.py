"""No secret leaks: every route is exercised (successes and errors) with known secret values, then
every response that does not issue a secret, all /_emulate output and every log record the
emulator wrote (DEBUG, all loggers, hypercorn's included) is scanned for each of them.

Also: issued tokens and codes carry >= 160 random bits, and secrets are compared in constant
time (a source scan for `==`/`!=` on secret-looking names, with an allow-list).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import httpx
import pytest
import trio
from emulatorrun import Running, StartEmulator

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
APP = "ri.foundry.main.deployed-app.secrets"
REDIRECT = "http://localhost:3000/callback"
CLIENT_SECRET = "client-secret-Qv3xTq9LmZ"
SEEDED_TOKEN = "seeded-bearer-Hk29sPq7"
SEEDED_MODULE_TOKEN = "seeded-module-token-Wn8rYc2d"
CONNECTION_SECRETS = ["conn-bearer-Zx81pLk", "conn-extra-Mv55qRt", "conn-rotated-Ty42wQa"]
SCOPES = [
    "api:admin-read",
    "api:ontologies-read",
    "api:connectivity-connection-read",
    "api:connectivity-connection-write",
]
SEED: dict[str, Any] = {
    "tokens": {SEEDED_TOKEN: {"username": "jane", "scopes": SCOPES}},
    "foundry": {
        "users": [{"username": "jane"}],
        "oauth_clients": [
            {
                "client_id": "sec-client",
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [REDIRECT],
            }
        ],
        "ontologies": [{"api_name": "o", "queries": [{"api_name": "q", "result": 1}]}],
        "compute_modules": {
            "runtimes": [{"runtime_id": "r1", "module_auth_token": SEEDED_MODULE_TOKEN}],
            "deployed_apps": [{"deployed_app_rid": APP, "runtime_id": "r1"}],
            "limits": {"poll_timeout": 0.05, "execute_timeout": 0.3, "job_timeout": 1},
        },
    },
}


@attrs.define
class Recorder:
    """Every exchange of the test, with the secrets its answer legitimately issues."""

    client: httpx.AsyncClient
    exchanges: list[tuple[str, httpx.Response, set[str]]] = attrs.field(factory=list)
    secrets: set[str] = attrs.field(factory=set)

    async def send(
        self, label: str, method: str, url: str, *, issues: bool = False, **kwargs: Any
    ) -> httpx.Response:
        with trio.fail_after(10):
            response = await self.client.request(method, url, **kwargs)
        issued: set[str] = set()
        if issues:
            issued = issued_by(response)
            self.secrets |= issued
        self.exchanges.append((label, response, issued))
        return response


def issued_by(response: httpx.Response) -> set[str]:
    """The secrets an issuing answer carries (token fields, a code in a redirect)."""
    found: set[str] = set()
    if "location" in response.headers:
        query = parse_qs(urlsplit(response.headers["location"]).query)
        found |= set(query.get("code", []))
    if response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        for key in ("access_token", "refresh_token", "moduleAuthToken"):
            if isinstance(body, dict) and isinstance(body.get(key), str):
                found.add(body[key])
    return found


def connection_body(bearer_value: str, extra_value: str, scheme: str = "HTTPS") -> dict[str, Any]:
    return {
        "parentFolderRid": "ri.compass.main.folder.secrets",
        "displayName": "Leaky?",
        "configuration": {
            "type": "rest",
            "domains": [
                {
                    "host": "api.example",
                    "port": 443,
                    "scheme": scheme,
                    "auth": {
                        "type": "bearerToken",
                        "bearerToken": {"type": "asPlaintextValue", "value": bearer_value},
                    },
                }
            ],
            "additionalSecrets": {
                "type": "asSecretsWithPlaintextValues",
                "secrets": {"EXTRA": extra_value},
            },
        },
        "worker": {
            "type": "foundryWorker",
            "networkEgressPolicyRids": [
                "ri.resource-policy-manager.global.network-egress-policy.x"
            ],
        },
    }


async def exercise(running: Running, rec: Recorder) -> None:
    """Every route, with successes and errors, carrying the known secrets."""
    jane = {"Authorization": f"Bearer {SEEDED_TOKEN}"}
    auth_params = {
        "response_type": "code",
        "client_id": "sec-client",
        "redirect_uri": REDIRECT,
        "scope": "api:admin-read offline_access",
        "state": "s1",
    }
    # OAuth: sign-in page, callback (issues a code), token exchange (issues tokens), errors.
    await rec.send("authorize page", "GET", "/multipass/api/oauth2/authorize", params=auth_params)
    await rec.send(
        "authorize bad",
        "GET",
        "/multipass/api/oauth2/authorize",
        params={**auth_params, "redirect_uri": "http://evil/cb"},
    )
    callback = await rec.send(
        "callback",
        "POST",
        "/multipass/api/oauth2/authorize/callback",
        issues=True,
        data={**auth_params, "username": "jane"},
    )
    assert callback.status_code == 303, callback.text
    code = parse_qs(urlsplit(callback.headers["location"]).query)["code"][0]
    await rec.send(
        "callback denied",
        "POST",
        "/multipass/api/oauth2/authorize/callback",
        data={**auth_params, "username": "nobody"},
    )
    token_form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": "sec-client",
        "client_secret": CLIENT_SECRET,
    }
    await rec.send(
        "exchange wrong secret",
        "POST",
        "/multipass/api/oauth2/token",
        data={**token_form, "client_secret": CLIENT_SECRET + "x"},
    )
    exchanged = await rec.send(
        "exchange", "POST", "/multipass/api/oauth2/token", issues=True, data=token_form
    )
    assert exchanged.status_code == 200, exchanged.text
    access, refresh = exchanged.json()["access_token"], exchanged.json()["refresh_token"]
    await rec.send(
        "exchange basic bad",
        "POST",
        "/multipass/api/oauth2/token",
        data={"grant_type": "authorization_code", "code": code},
        auth=("sec-client", "wrong-" + CLIENT_SECRET),
    )
    refreshed = await rec.send(
        "refresh",
        "POST",
        "/multipass/api/oauth2/token",
        issues=True,
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        auth=("sec-client", CLIENT_SECRET),
    )
    assert refreshed.status_code == 200, refreshed.text
    await rec.send("exchange replay", "POST", "/multipass/api/oauth2/token", data=token_form)
    await rec.send(
        "refresh replay",
        "POST",
        "/multipass/api/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh},
        auth=("sec-client", CLIENT_SECRET),
    )
    credentials = await rec.send(
        "client credentials",
        "POST",
        "/multipass/api/oauth2/token",
        issues=True,
        data={
            "grant_type": "client_credentials",
            "client_id": "sec-client",
            "client_secret": CLIENT_SECRET,
            "scope": "api:admin-read",
        },
    )
    assert credentials.status_code == 200, credentials.text
    oauth_access = {"Authorization": f"Bearer {access}"}
    await rec.send("me", "GET", "/multipass/api/me", headers=oauth_access)
    await rec.send("current user", "GET", "/api/v2/admin/users/getCurrent", headers=oauth_access)
    await rec.send("enrollment", "GET", "/api/v2/admin/enrollments/getCurrent", headers=jane)
    await rec.send(
        "revoke access",
        "POST",
        "/multipass/api/oauth2/revoke_token",
        data={"token": access},
        auth=("sec-client", CLIENT_SECRET),
    )
    await rec.send("revoked me", "GET", "/multipass/api/me", headers=oauth_access)
    await rec.send(
        "revoke wrong client secret",
        "POST",
        "/multipass/api/oauth2/revoke_token",
        data={"token": refreshed.json()["refresh_token"]},
        auth=("sec-client", "nope"),
    )
    await rec.send(
        "revoke refresh",
        "POST",
        "/multipass/api/oauth2/revoke_token",
        data={"token": refreshed.json()["refresh_token"]},
        auth=("sec-client", CLIENT_SECRET),
    )

    # Connectivity: secrets in, names out; errors must not echo values.
    conn = "/api/v2/connectivity/connections"
    created = await rec.send(
        "create connection",
        "POST",
        conn,
        headers=jane,
        json=connection_body(*CONNECTION_SECRETS[:2]),
    )
    assert created.status_code == 200, created.text
    rid = created.json()["rid"]
    await rec.send(
        "create bad scheme",
        "POST",
        conn,
        headers=jane,
        json=connection_body(CONNECTION_SECRETS[0], CONNECTION_SECRETS[1], scheme="GOPHER"),
    )
    bad = connection_body(*CONNECTION_SECRETS[:2])
    bad["configuration"]["additionalSecrets"]["secrets"] = {"EXTRA": [CONNECTION_SECRETS[1]]}
    await rec.send("create bad secret type", "POST", conn, headers=jane, json=bad)
    await rec.send("get connection", "GET", f"{conn}/{rid}", headers=jane)
    await rec.send("get configuration", "GET", f"{conn}/{rid}/getConfiguration", headers=jane)
    await rec.send(
        "update secrets",
        "POST",
        f"{conn}/{rid}/updateSecrets",
        headers=jane,
        json={"secrets": {"EXTRA": CONNECTION_SECRETS[2]}},
    )
    await rec.send(
        "update unknown name",
        "POST",
        f"{conn}/{rid}/updateSecrets",
        headers=jane,
        json={"secrets": {"NOPE": CONNECTION_SECRETS[2]}},
    )
    await rec.send(
        "update bad value",
        "POST",
        f"{conn}/{rid}/updateSecrets",
        headers=jane,
        json={"secrets": {"EXTRA": [CONNECTION_SECRETS[2]]}},
    )
    await rec.send(
        "update missing",
        "POST",
        f"{conn}/ri.magritte..source.x/updateSecrets",
        headers=jane,
        json={"secrets": {"EXTRA": CONNECTION_SECRETS[2]}},
    )

    # Ontologies.
    await rec.send("ontologies", "GET", "/api/v2/ontologies", headers=jane)
    await rec.send("ontology", "GET", "/api/v2/ontologies/o", headers=jane)
    await rec.send(
        "query",
        "POST",
        "/api/v2/ontologies/o/queries/q/execute",
        headers=jane,
        json={"parameters": {}},
    )
    await rec.send(
        "query bad",
        "POST",
        "/api/v2/ontologies/o/queries/q/execute",
        headers=jane,
        content=b"{nope",
    )

    # Compute modules: sessions (issue module tokens), schemas, poll, results, contour, inspect.
    session = await rec.send(
        "create runtime", "POST", RUNTIMES, issues=True, json={"runtimeId": "r2"}
    )
    assert session.status_code == 200, session.text
    rotated = await rec.send(
        "rotate runtime",
        "POST",
        RUNTIMES,
        issues=True,
        json={"runtimeId": "r2", "rotateToken": True},
    )
    old_module_token = session.json()["moduleAuthToken"]
    rec.secrets.add(old_module_token)
    await rec.send("reset seeded runtime", "POST", RUNTIMES, json={"runtimeId": "r1"}, issues=True)
    await rec.send(
        "bad runtime body", "POST", RUNTIMES, json={"runtimeId": SEEDED_MODULE_TOKEN[:0]}
    )
    module = {"Module-Auth-Token": SEEDED_MODULE_TOKEN}
    await rec.send(
        "old token poll",
        "GET",
        f"{RUNTIMES}/r2/job",
        headers={"Module-Auth-Token": old_module_token},
    )
    await rec.send(
        "new token poll",
        "GET",
        f"{RUNTIMES}/r2/job",
        headers={"Module-Auth-Token": rotated.json()["moduleAuthToken"]},
    )
    await rec.send(
        "wrong runtime token",
        "GET",
        f"{RUNTIMES}/r1/job",
        headers={"Module-Auth-Token": rotated.json()["moduleAuthToken"]},
    )
    await rec.send("schemas", "POST", f"{RUNTIMES}/r1/schemas", headers=module, json=[])
    submitted = await rec.send(
        "submit",
        "POST",
        f"{CONTOUR}/deployed-apps/jobs",
        headers=jane,
        json={"deployedAppRid": APP, "queryType": "add", "query": {"x": 1}},
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["id"]
    polled = await rec.send("poll", "GET", f"{RUNTIMES}/r1/replicas/a/job", headers=module)
    assert polled.status_code == 200, polled.text
    await rec.send(
        "result wrong token",
        "POST",
        f"{RUNTIMES}/r1/results/{job_id}",
        headers={"Module-Auth-Token": CLIENT_SECRET},
        content=b"2",
    )
    await rec.send(
        "result", "POST", f"{RUNTIMES}/r1/replicas/a/results/{job_id}", headers=module, content=b"2"
    )
    await rec.send(
        "result again", "POST", f"{RUNTIMES}/r1/results/{job_id}", headers=module, content=b"2"
    )
    await rec.send("status", "GET", f"{CONTOUR}/jobs/{job_id}/status", headers=jane)
    await rec.send("fetch", "PUT", f"{CONTOUR}/jobs/result/v2", headers=jane, json={"id": job_id})
    await rec.send("inspect", "GET", f"{RUNTIMES}/r1/jobs/{job_id}")
    await rec.send("restart", "POST", f"{RUNTIMES}/r1/replicas/a/restart", headers=module)
    await rec.send(
        "restart unknown",
        "POST",
        f"{RUNTIMES}/r1/restart",
        headers={"Module-Auth-Token": old_module_token},
    )
    await rec.send(
        "execute timeout",
        "POST",
        f"{CONTOUR}/compute-modules/jobs/execute",
        headers=jane,
        json={"deployedAppRid": APP, "queryType": "q", "query": {}},
    )
    await rec.send(
        "execute bad token",
        "POST",
        f"{CONTOUR}/compute-modules/jobs/execute",
        headers={"Authorization": f"Bearer {SEEDED_MODULE_TOKEN}"},
        json={},
    )

    # The emulator's own output.
    await rec.send("health", "GET", "/_emulate/health")
    await rec.send("inspector page", "GET", "/_emulate/")
    await rec.send("job inspect", "GET", f"/_emulate/foundry/compute-modules/jobs/{job_id}")
    await rec.send("openapi", "GET", "/_emulate/openapi.json")
    await rec.send("state", "GET", "/_emulate/state")
    await rec.send("requests", "GET", "/_emulate/requests")


def _log_text(records: list[logging.LogRecord]) -> str:
    lines = []
    for record in records:
        lines.append(record.getMessage())
        if record.exc_text:
            lines.append(record.exc_text)
        # Arguments are scanned too: a record must not carry a secret even unformatted.
        lines.append(repr(record.__dict__.get("args")))
    return "\n".join(lines)


async def test_no_secret_in_answers_emulate_output_or_logs(
    start_emulator: StartEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Hypercorn serves only HTTP/2 connections and logs only its failures; it is scanned too.
    for name in ("emulator.access", "hypercorn.error", "emulator", "quart.app", "quart.serving"):
        caplog.set_level(logging.DEBUG, logger=name)
    # With the access log on, so the per-request lines are scanned too.
    running = await start_emulator(SEED, tls_enabled=False, access_log=True)
    async with running.client() as client:
        rec = Recorder(client)
        await exercise(running, rec)
    secrets = rec.secrets | {CLIENT_SECRET, SEEDED_TOKEN, SEEDED_MODULE_TOKEN, *CONNECTION_SECRETS}
    # The secrets issued along the way: codes, access and refresh tokens, module tokens.
    assert len(rec.secrets) >= 8, rec.secrets
    assert all(len(secret) >= 16 for secret in secrets)

    leaks = []
    for label, response, issued in rec.exchanges:
        text = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        for secret in secrets - issued:
            if secret in text:
                leaks.append((label, response.status_code, secret[:6] + "..."))
    assert not leaks, leaks

    # The test's own client (httpx/httpcore) logs what it sent and got; those are not the
    # emulator's lines.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert {r.name for r in records} >= {"emulator.access"}, {r.name for r in records}
    assert records, "the emulator logged nothing at DEBUG: the scan would prove nothing"
    logged = [
        (record.name, record.getMessage().replace(secret, "<SECRET>")[:200])
        for record in records
        for secret in secrets
        if secret in _log_text([record])
    ]
    assert not logged, logged
    # Every route was hit (the request log lists them), errors included.
    statuses = {response.status_code for _, response, _ in rec.exchanges}
    assert {200, 204, 303, 400, 401, 404}.issubset(statuses), statuses


@pytest.mark.parametrize("kind", ["code", "access", "refresh", "module", "client_credentials"])
async def test_tokens_and_codes_have_160_random_bits(
    start_emulator: StartEmulator, kind: str
) -> None:
    running = await start_emulator(SEED, tls_enabled=False)
    async with running.client() as client:
        rec = Recorder(client)
        values: list[str] = []
        for _ in range(3):
            if kind == "module":
                answer = await rec.send(
                    "rt", "POST", RUNTIMES, json={"runtimeId": "r9", "rotateToken": True}
                )
                values.append(answer.json()["moduleAuthToken"])
                continue
            if kind == "client_credentials":
                answer = await rec.send(
                    "cc",
                    "POST",
                    "/multipass/api/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=("sec-client", CLIENT_SECRET),
                )
                values.append(answer.json()["access_token"])
                continue
            params = {
                "response_type": "code",
                "client_id": "sec-client",
                "redirect_uri": REDIRECT,
                "scope": "api:admin-read offline_access",
                "state": "s",
            }
            callback = await rec.send(
                "cb",
                "POST",
                "/multipass/api/oauth2/authorize/callback",
                data={**params, "username": "jane"},
            )
            code = parse_qs(urlsplit(callback.headers["location"]).query)["code"][0]
            if kind == "code":
                values.append(code)
                continue
            tokens = await rec.send(
                "x",
                "POST",
                "/multipass/api/oauth2/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT},
                auth=("sec-client", CLIENT_SECRET),
            )
            values.append(tokens.json()["access_token" if kind == "access" else "refresh_token"])
    assert len(set(values)) == 3
    for value in values:
        # The random part: the base64url run after the last fixed, lower-case prefix word.
        random_part = re.sub(r"^(foundry_(module_auth_|refresh_)?)", "", value)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", random_part), value
        assert len(random_part) * 6 >= 160, (kind, len(random_part))


# `==`/`!=` next to a secret-looking name; the allow-list names comparisons of non-secrets.
SECRET_COMPARE = re.compile(
    r"(?i)\b[\w.]*(token|secret|code|verifier|challenge|password)[\w.]*\s*[!=]=|"
    r"[!=]=\s*[\w.]*(token|secret|code|verifier|challenge|password)"
)
ALLOWED = (
    "status_code",
    "error.code",
    "exit_code(code)",
    "code != 0",
    "token_type",
    "grant_type",
    "response_type",
    "code_challenge_method",
    "method ==",
    "kind ==",
)


def test_secret_comparisons_are_constant_time() -> None:
    root = Path(__file__).resolve().parents[2] / "emulator"
    suspicious = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if SECRET_COMPARE.search(code) and not any(word in code for word in ALLOWED):
                suspicious.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert not suspicious, "compare secrets with same_secret/hmac.compare_digest:\n" + "\n".join(
        suspicious
    )
    tokens_module = (root / "foundry" / "core" / "tokens.py").read_text()
    assert "hmac.compare_digest" in tokens_module
    # The scan can find something: a planted comparison is flagged.
    assert SECRET_COMPARE.search("if given_token == expected:")
