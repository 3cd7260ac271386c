"""The real fabric-platform 0.7.2 client, unmodified, through every route group of the seed,
over HTTP and HTTPS. The client is synchronous, so each scenario runs in a worker thread while
the emulator serves on the test's trio loop.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import pytest
import trio
from fabric_platform import FabricClient  # type: ignore[import-untyped]
from fabric_platform.errors import (  # type: ignore[import-untyped]
    FabricAuthError,
    FabricConflictError,
    FabricForbiddenError,
    FabricNotFoundError,
    FabricValidationError,
)
from fabric_platform.models import (  # type: ignore[import-untyped]
    ApiKey,
    Asset,
    AuthzCheckResponse,
    CreateApiKeyResponse,
    DomainEvent,
    Invitation,
    Membership,
    MeResponse,
    MyOrgSummary,
    MyTeamSummary,
    Organization,
    OrgUsageSummary,
    ProviderCapability,
    ProviderExecuteResponse,
    Team,
    WorkflowRun,
)
from fabric_server import (
    ACME,
    ALICE,
    BOB,
    CAROL,
    FULL_KEY,
    JWT_SECRET,
    READ_KEY,
    FabricServer,
    start_fabric,
)

T = TypeVar("T")
EVE = "55555555-5555-4555-8555-555555555555"


@pytest.fixture(params=["http", "https"])
async def server(
    request: pytest.FixtureRequest,
    nursery: trio.Nursery,
    state_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> FabricServer:
    running = await start_fabric(nursery, state_dir)
    if request.param == "https":
        # The client builds its own httpx.Client; it trusts the local CA through the
        # environment, the way a user would configure it.
        assert running.endpoints.ca_path is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(running.endpoints.ca_path))
        running.base = running.https_url
    else:
        running.base = running.http_url
    return running


def _base(server: FabricServer) -> str:
    return server.base


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def client(server: FabricServer, **kwargs: Any) -> FabricClient:
    return FabricClient(base_url=_base(server), **kwargs)


def envelope_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) == {"meta", "context", "data", "error", "links"}
    assert body["meta"]["status"] == response.status_code
    assert response.headers["x-request-id"] == body["meta"]["request_id"]
    return body


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, str | None, dict[str, Any]]]:
    """(id, event name, data) per frame; comments ignored."""
    frame_id: str | None = None
    name: str | None = None
    for line in lines:
        if line.startswith("id: "):
            frame_id = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield frame_id, name, json.loads(line[6:])
            frame_id = name = None


# Health and identity -------------------------------------------------------------------------


async def test_health_identity_and_tenancy(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server) as anonymous:
            health = envelope_of(anonymous._client.get("/healthz"))
            assert health["data"] == {"status": "ok"}
            assert envelope_of(anonymous._client.get("/readyz"))["data"] == {"status": "ready"}
            document = anonymous._client.get("/openapi.json").json()
            assert "/v1/jobs" in document["paths"]
            assert anonymous.health_check() == {"status": "ok"}
            with pytest.raises(FabricAuthError):
                anonymous.get_me()

        with client(server, principal_id=ALICE) as alice:
            me = MeResponse(**alice.get_me())
            assert me.principal_id == ALICE
            orgs = [MyOrgSummary(**o) for o in alice.get_my_organizations()]
            assert {o.id for o in orgs} >= {ACME, "00000000-0000-0000-0000-000000000010"}
            perms = alice.get_my_permissions()
            assert {"organization_id": ACME, "team_id": None, "role": "owner"}.items() <= next(
                p for p in perms if p["organization_id"] == ACME
            ).items()

            slug = f"org-{uuid.uuid4().hex[:8]}"
            org = Organization(**alice.create_organization(slug, "Org"))
            with pytest.raises(FabricConflictError):
                alice.create_organization(slug, "Again")
            assert Organization(**alice.get_organization(org.id)).slug == slug
            team = Team(**alice.create_team(org.id, "core", "Core"))
            assert Team(**alice.get_team(team.id)).name == "Core"
            assert [Team(**t).id for t in alice.list_org_teams(org.id)] == [team.id]
            assert [MyTeamSummary(**t).id for t in alice.get_my_teams()] == [team.id]
            members = [Membership(**m) for m in alice.list_org_members(org.id)]
            assert [(m.principal_id, m.role) for m in members] == [(ALICE, "owner")]

            invitation = Invitation(**alice.create_invitation(org.id, "bob@example.com", "member"))
            assert invitation.status == "pending"
            with pytest.raises(FabricConflictError):
                alice.create_invitation(org.id, "bob@example.com", "member")
            with pytest.raises(FabricValidationError):
                alice.create_invitation(org.id, "no-at-sign", "member")

        with client(server, principal_id=BOB) as bob:
            with pytest.raises(FabricNotFoundError):  # not a member yet: not visible
                bob.get_organization(org.id)
            bob.accept_invitation(invitation.id)
            assert bob.get_organization(org.id)["id"] == org.id
            with pytest.raises(FabricForbiddenError):  # member < admin: RBAC enforced
                bob.create_team(org.id, "bobs", "Bob's")
            with pytest.raises(httpx.HTTPStatusError) as refused:
                bob.accept_invitation(invitation.id)
            assert refused.value.response.status_code == 409
            assert envelope_of(refused.value.response)["error"]["code"] == "conflict"
            with pytest.raises(httpx.HTTPStatusError) as forbidden:
                bob.revoke_invitation(invitation.id)
            assert forbidden.value.response.status_code == 403

        with client(server, principal_id=ALICE) as alice:
            second = alice.create_invitation(org.id, "carol@example.com", "viewer")
            alice.revoke_invitation(second["id"])
            assert AuthzCheckResponse(
                allowed=alice.check_permission("admin", f"organization:{org.id}")
            )
            batch = alice.check_permissions(
                [
                    {"action": "read", "resource": f"organization:{org.id}"},
                    {"action": "jobs:fly", "resource": f"organization:{org.id}"},
                ]
            )
            assert [(c["allowed"], c["reason"]) for c in batch] == [
                (True, None),
                (False, "unknown action"),
            ]

    await in_thread(scenario)


# Jobs, events and idempotency ---------------------------------------------------------------


async def test_jobs_idempotency_streams_and_paging(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server, principal_id=CAROL, organization_id=ACME) as carol:
            job = carol.create_job(
                "text", {"prompt": "hello emulated world"}, idempotency_key="k-1"
            )
            assert job["status"] == "pending"
            assert job["id"] == job["job_id"]
            assert job["estimated_cost_usd"] == 0.0
            replay = carol._client.post(
                "/v1/jobs",
                json={
                    "modality": "text",
                    "input": {"prompt": "hello emulated world"},
                    "organization_id": ACME,
                    "idempotency_key": "k-1",
                },
            )
            assert replay.status_code == 200
            assert replay.headers["idempotent-replayed"] == "true"
            assert envelope_of(replay)["data"]["id"] == job["id"]
            with pytest.raises(FabricConflictError):
                carol.create_job("text", {"prompt": "another body"}, idempotency_key="k-1")

            events = [DomainEvent(**e) for e in carol.stream_job_events(job["id"])]
            kinds = [e.kind for e in events]
            assert kinds == ["job_created", "job_started", "job_completed"]
            done = carol.get_job(job["id"])
            assert done["status"] == "completed"
            assert done["output"] == {"text": "hello emulated world"}
            usage = carol.get_job_usage(job["id"])
            assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (
                3,
                3,
                6,
            )
            assert len(usage["provider_calls"]) == 1

            failing = carol.create_job("text", {"prompt": "x"}, params={"fail": True})
            last = list(carol.stream_job_events(failing["id"]))[-1]
            assert last["kind"] == "job_failed"
            assert last["payload"] == {"error": "echo: forced failure"}

            for index in range(3):
                carol.create_job("image", {"prompt": f"p{index}"})
            seen: list[str] = []
            cursor = None
            while True:
                page = carol.list_jobs(limit=2, cursor=cursor)
                assert page["pagination"]["count"] == len(page["items"]) <= 2
                seen += [item["id"] for item in page["items"]]
                cursor = page["pagination"]["next_cursor"]
                if not page["pagination"]["has_more"]:
                    break
            assert len(seen) == len(set(seen)) == 5
            with pytest.raises(FabricValidationError):
                carol.list_jobs(limit=2, cursor="not-a-cursor")

        with (
            client(server, principal_id=BOB, organization_id=ACME) as bob,
            pytest.raises(FabricForbiddenError),  # a viewer cannot submit
        ):
            bob.create_job("text", {"prompt": "x"})
        with (
            client(server, principal_id=EVE, organization_id=ACME) as eve,
            pytest.raises(FabricNotFoundError),
        ):
            eve.get_job(job["id"])

    await in_thread(scenario)


async def test_event_stream_resumes_after_last_event_id(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server, principal_id=CAROL, organization_id=ACME) as carol:
            first = carol.create_job("text", {"prompt": "one"})
            list(carol.stream_job_events(first["id"]))
            second = carol.create_job("text", {"prompt": "two"})
            list(carol.stream_job_events(second["id"]))
            frames = [e for e in carol.stream_job_events(first["id"])]
            resume_from = frames[-1]["id"]  # job.completed of the first job
            got: list[dict[str, Any]] = []
            with carol._client.stream(
                "GET", "/v1/events/stream", headers={"Last-Event-ID": resume_from}
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for frame_id, name, data in sse_events(response.iter_lines()):
                    assert frame_id == data["id"]
                    assert name is not None
                    assert name.replace(".", "_") == data["kind"]
                    got.append(data)
                    if data["kind"] == "job_completed" and data["job_id"] == second["id"]:
                        break
            sequences = [e["sequence"] for e in got]
            assert sequences == sorted(sequences)
            assert sequences[0] == frames[-1]["sequence"] + 1
            assert {e["job_id"] for e in got if e["job_id"]} == {second["id"]}

    await in_thread(scenario)


# Workflows ----------------------------------------------------------------------------------

NODES = [
    {
        "key": "draft",
        "operation": "ai.generate",
        "runtime": "provider",
        "config": {"modality": "text"},
        "inputs": {"prompt": "$context.topic"},
        "outputs": {"text": "$context.draft"},
    },
    {
        "key": "polish",
        "operation": "ai.generate",
        "runtime": "provider",
        "config": {"modality": "text"},
        "inputs": {"prompt": "$context.draft"},
        "outputs": {"text": "$context.final"},
        "depends_on": ["draft"],
    },
]


async def test_workflows_runs_streams_and_cancel(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server, principal_id=CAROL, organization_id=ACME) as carol:
            workflow_id = carol.upsert_workflow("essay", NODES)
            assert carol.upsert_workflow("essay", NODES) == workflow_id  # upsert keeps the id
            assert carol.get_workflow(workflow_id)["version"] == 2
            assert workflow_id in [w["id"] for w in carol.list_workflows()]
            with pytest.raises(FabricValidationError):
                carol.upsert_workflow("loop", [{**NODES[0], "depends_on": ["polish"]}, NODES[1]])

            run_id = carol.run_workflow(workflow_id, context={"topic": "trio"})
            events = list(carol.stream_run_events(run_id))  # closes after the terminal event
            assert events[-1]["kind"] == "workflow_run_completed"
            assert [e["node_key"] for e in events if e["kind"] == "workflow_node_completed"] == [
                "draft",
                "polish",
            ]
            run = WorkflowRun(**carol.wait_for_run(run_id, poll_interval=0.05, timeout=10))
            assert run.status == "completed"
            assert run.progress is not None
            assert (run.progress.total_tasks, run.progress.percentage) == (2, 100.0)
            assert run.output == {"topic": "trio", "draft": "trio", "final": "trio"}

            slow_id = carol.upsert_workflow(
                "slow",
                [{**NODES[0], "config": {"modality": "text", "params": {"delay_ms": 60000}}}],
            )
            slow_run = carol.run_workflow(slow_id, context={"topic": "x"})
            cancelled = carol.cancel_run(slow_run)
            assert cancelled["status"] == "cancelled"
            assert cancelled["nodes"]["draft"]["status"] == "skipped"
            assert carol.cancel_run(slow_run)["status"] == "cancelled"  # again: 200, unchanged
            kinds = [e["kind"] for e in carol.stream_run_events(slow_run)]
            assert kinds[-2:] == ["workflow_node_skipped", "workflow_run_cancelled"]
            with pytest.raises(FabricConflictError):
                carol.cancel_run(run_id)  # completed runs cannot be cancelled

            body = {"workflow_definition_id": workflow_id, "idempotency_key": "run-1"}
            first = carol._client.post("/v1/workflow-runs", json=body)
            again = carol._client.post("/v1/workflow-runs", json=body)
            assert (first.status_code, again.status_code) == (201, 200)
            assert envelope_of(first)["data"]["id"] == envelope_of(again)["data"]["id"]
            conflict = carol._client.post(
                "/v1/workflow-runs", json={**body, "context": {"topic": "other"}}
            )
            assert conflict.status_code == 409

    await in_thread(scenario)


# Providers, keys, assets, usage, audit ------------------------------------------------------


async def test_providers(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server, principal_id=CAROL) as carol:
            caps = [ProviderCapability(**p) for p in carol.providers()]
            assert {(c.provider_id, c.modality) for c in caps} == {
                ("echo", m) for m in ("text", "image", "audio", "embedding")
            }
            answer = ProviderExecuteResponse(**carol.execute_provider("text", {"prompt": "a b c"}))
            assert answer.output == {"text": "a b c"}
            assert answer.usage["input_tokens"] == 3
            estimate = carol.estimate_cost("text", {"prompt": "a b"})
            assert estimate["estimated_input_tokens"] == 2
            with pytest.raises(FabricValidationError):
                carol.execute_provider("text", {"prompt": "x"}, model="no-such-model")
            with carol._client.stream(
                "POST",
                "/v1/providers/execute/stream",
                json={"modality": "text", "input": {"prompt": "one two three"}},
            ) as response:
                frames = list(sse_events(response.iter_lines()))
            tokens = [data["delta"] for _, name, data in frames if name == "token"]
            assert "".join(tokens) == "one two three"
            assert frames[-1][1] == "done"
            assert frames[-1][2]["output"] == {"text": "one two three"}
            refused = carol._client.post(
                "/v1/providers/execute/stream", json={"modality": "image", "input": {}}
            )
            assert refused.status_code == 400
            assert envelope_of(refused)["error"]["code"] == "validation_error"

    await in_thread(scenario)


async def test_api_keys_scopes_and_revocation(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server, principal_id=ALICE) as alice:
            created = CreateApiKeyResponse(**alice.create_api_key("ci", ACME, scopes=["jobs:read"]))
            raw = created.key
            assert raw.startswith("fab_")
            assert created.prefix == raw[:12]
            listed = [ApiKey(**k) for k in alice.list_api_keys()]
            assert created.id in [k.id for k in listed]
            assert raw not in json.dumps(alice.list_api_keys())
            assert "key" not in alice.get_api_key(created.id)
            with pytest.raises(FabricValidationError):
                alice.create_api_key("bad", ACME, scopes=["jobs:everything"])

        with client(server, api_key=raw, organization_id=ACME) as scoped:
            assert scoped.get_me()["auth_method"] == "api_key"
            assert scoped.list_jobs()["items"] is not None
            with pytest.raises(FabricForbiddenError) as refused:
                scoped.create_job("text", {"prompt": "x"})
            assert "jobs:write" in str(refused.value)
            with pytest.raises(FabricForbiddenError):
                scoped.create_organization("nope-org", "Nope")

        with client(server, api_key=READ_KEY, principal_id=EVE) as both:
            # Authorization and X-Principal-Id together: the key wins.
            assert both.get_me()["principal_id"] == ALICE

        with client(server, api_key=FULL_KEY) as full:
            # The client sends its default org; a key only reaches its own org.
            with pytest.raises(FabricNotFoundError):
                full.create_job("text", {"prompt": "default org"})
            full.set_organization_id(ACME)
            assert full.create_job("text", {"prompt": "full access"})["organization_id"] == ACME

        with client(server, principal_id=ALICE) as alice:
            alice.disable_api_key(created.id)
            assert alice.get_api_key(created.id)["disabled"] is True
            alice.disable_api_key(created.id)  # idempotent
        with client(server, api_key=raw) as disabled, pytest.raises(FabricAuthError):
            disabled.get_me()
        with client(server, principal_id=ALICE) as alice:
            alice.delete_api_key(created.id)
            with pytest.raises(FabricNotFoundError):
                alice.get_api_key(created.id)
        with client(server, api_key=raw) as revoked, pytest.raises(FabricAuthError):
            revoked.get_me()
        with client(server, api_key="fab_" + "Z" * 32) as unknown, pytest.raises(FabricAuthError):
            unknown.get_me()

        token = jwt.encode({"sub": CAROL, "exp": 4_000_000_000}, JWT_SECRET, algorithm="HS256")
        with client(server, api_key=token) as by_jwt:
            me = by_jwt.get_me()
            assert (me["principal_id"], me["auth_method"]) == (CAROL, "jwt")
        forged = jwt.encode(
            {"sub": CAROL}, "not-the-secret-at-all-but-32-bytes-long", algorithm="HS256"
        )
        with client(server, api_key=forged) as bad, pytest.raises(FabricAuthError):
            bad.get_me()

    await in_thread(scenario)


async def test_assets_usage_and_audit(server: FabricServer) -> None:
    def scenario() -> None:
        payload = bytes(range(256)) * 300
        with client(server, principal_id=CAROL, organization_id=ACME) as carol:
            asset = Asset(**carol.upload_asset(payload, filename="blob.bin"))
            assert (asset.size_bytes, asset.kind) == (len(payload), "file")
            assert carol.download_asset(asset.id) == payload
            with pytest.raises(FabricNotFoundError):
                carol.download_asset(str(uuid.uuid4()))
            job = carol.create_job("text", {"prompt": "count these four"})
            list(carol.stream_job_events(job["id"]))
            with pytest.raises(FabricForbiddenError):
                carol.get_org_audit_logs(ACME)  # member < admin
            summary = OrgUsageSummary(**carol.get_org_usage(ACME))
            assert summary.total_runs >= 1
            records = carol.get_org_usage_records(ACME)
            assert records[0]["job_id"] == job["id"]
            assert records[0]["input_tokens"] == 3
        with client(server, principal_id=ALICE) as alice:
            actions = [e["action"] for e in alice.get_org_audit_logs(ACME)]
            assert actions[:2] == ["job.create", "asset.upload"]
            assert {e["organization_id"] for e in alice.get_audit_logs()} >= {ACME}

    await in_thread(scenario)


async def test_errors_are_envelopes(server: FabricServer) -> None:
    def scenario() -> None:
        with client(server, principal_id=CAROL) as carol:
            raw = carol._client
            bad_json = raw.post("/v1/jobs", content=b"{nope")
            assert bad_json.status_code == 400
            assert envelope_of(bad_json)["error"]["code"] == "bad_request"
            not_object = raw.post("/v1/jobs", json=[1, 2])
            assert envelope_of(not_object)["error"]["code"] == "validation_error"
            missing = raw.get(f"/v1/workflow-runs/{uuid.uuid4()}")
            assert envelope_of(missing)["error"]["code"] == "not_found"
            no_auth = httpx.get(_base(server) + "/v1/me", verify=False)
            body = envelope_of(no_auth)
            assert (no_auth.status_code, body["error"]["code"]) == (401, "unauthorized")
            assert body["data"] is None
            assert body["links"] == {}

    await in_thread(scenario)
