"""`--state-file` for Fabric: tenants, keys (hashes), definitions, jobs and runs (with their
idempotency keys) survive; what had not finished comes back failed; bad data changes nothing."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fabric_server import ACME, SEED
from fabric_support import ALICE, CAROL, DAVE, EVE, dev, make_world

from emulator.embedded import run_in_thread
from emulator.fabric.core.errors import Conflict
from emulator.fabric.core.jobs import JobStatus
from emulator.fabric.core.tenancy import Role
from emulator.fabric.core.workflows import NodeStatus, RunStatus
from emulator.fabric.persistence import RESTARTED, restore, snapshot
from emulator.platform.statefile import load_state
from emulator.platform.statefile import restore as restore_services


def _populated() -> tuple[dict[str, Any], str, str, str]:
    world = make_world()
    plane = world.plane
    org = plane.create_organization(dev(EVE), {"slug": "saved", "name": "Saved"})
    team = plane.create_team(dev(EVE), {"organization_id": org.id, "slug": "t1", "name": "T"})
    plane.create_invitation(
        dev(EVE), {"organization_id": org.id, "email": "x@example.com", "role": "admin"}
    )
    key, raw = plane.create_api_key(
        dev(DAVE), {"name": "k", "organization_id": world.acme, "scopes": ["jobs:read"]}
    )
    definition, _ = plane.upsert_definition(
        dev(CAROL),
        {"name": "w", "organization_id": world.acme, "nodes": [{"key": "a"}]},
    )
    # One job that finished (its run marked done by hand: no executor here), one still pending,
    # and a workflow run that never started.
    done, _ = plane.submit_job(
        dev(CAROL),
        {"modality": "text", "input": {"prompt": "p"}, "organization_id": world.acme},
        header_key="done-key",
    )
    done.status, done.output = JobStatus.COMPLETED, {"text": "p"}
    done_run = plane.runs[done.workflow_run_id]
    done_run.status = RunStatus.COMPLETED
    for node in done_run.nodes.values():
        node.status = NodeStatus.COMPLETED
    plane.submit_job(
        dev(CAROL), {"modality": "text", "input": {"prompt": "q"}, "organization_id": world.acme}
    )
    plane.create_run(dev(CAROL), {"workflow_definition_id": definition.id})
    data = json.loads(json.dumps(snapshot(plane)))  # what the file holds
    assert raw not in json.dumps(data)
    assert key.key_hash in json.dumps(data)
    assert team.id in json.dumps(data)
    return data, raw, org.id, definition.id


def test_round_trip() -> None:
    data, raw, org_id, definition_id = _populated()
    fresh = make_world(first_id=10_000).plane
    restore(fresh, data)
    caller = fresh.authenticate(f"Bearer {raw}", None, public=False)
    assert caller is not None
    assert caller.principal_id == DAVE
    assert fresh.tenancy.role_in(EVE, org_id) is Role.OWNER
    assert [o.id for o, _ in fresh.my_orgs(dev(EVE))].count(org_id) == 1
    assert fresh.get_definition(dev(CAROL), definition_id).name == "w"
    assert [t.slug for t in fresh.org_teams(dev(EVE), org_id)] == ["t1"]
    assert fresh.tenancy.role_in(ALICE, fresh.tenancy.organizations[org_id].id) is None


def test_jobs_and_runs_come_back_and_unfinished_ones_have_failed() -> None:
    data, _raw, _org_id, definition_id = _populated()
    fresh = make_world(first_id=10_000).plane
    restore(fresh, data)
    jobs = {job.input["prompt"]: job for job in fresh.jobs.values()}
    assert jobs["p"].status is JobStatus.COMPLETED
    assert jobs["p"].output == {"text": "p"}
    assert fresh.runs[jobs["p"].workflow_run_id].status is RunStatus.COMPLETED
    assert (jobs["q"].status, jobs["q"].error) == (JobStatus.FAILED, RESTARTED)
    (run,) = [r for r in fresh.runs.values() if r.workflow_definition_id == definition_id]
    assert (run.status, run.error) == (RunStatus.FAILED, RESTARTED)
    assert [node.status for node in run.nodes.values()] == [NodeStatus.SKIPPED]
    # The idempotency key still names the finished job; another body under it is refused.
    body = {
        "modality": "text",
        "input": {"prompt": "p"},
        "organization_id": jobs["p"].organization_id,
    }
    replayed, was_replay = fresh.submit_job(dev(CAROL), body, header_key="done-key")
    assert (replayed.id, was_replay) == (jobs["p"].id, True)
    with pytest.raises(Conflict, match="idempotency key"):
        fresh.submit_job(dev(CAROL), {**body, "input": {"prompt": "other"}}, header_key="done-key")
    # Saved and restored again, the restored jobs are as they were (nothing re-runs).
    again = make_world(first_id=20_000).plane
    restore(again, json.loads(json.dumps(snapshot(fresh))))
    assert {job.id: job.status for job in again.jobs.values()} == {
        job.id: job.status for job in fresh.jobs.values()
    }


def _break(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(data)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("version",), 99, "fabric: "),
        (("organizations",), "nope", "fabric.organizations: "),
        (("organizations", 0, "slug"), 5, "fabric.organizations[0].slug: "),
        (("memberships", 0, "role"), "emperor", "fabric.memberships[0].role: "),
        (("api_keys", 0, "status"), "zombie", "fabric.api_keys[0].status: "),
        (("api_keys", 0, "scopes"), "jobs:read", "fabric.api_keys[0].scopes: "),
        (("invitations", 0, "expires_at"), "soon", "fabric.invitations[0].expires_at: "),
        (("workflow_definitions", 0, "nodes"), [], "fabric.workflow_definitions[0].nodes: "),
        (("teams", 0, "organization_id"), "missing-org", "unknown organization"),
        (("teams", 0, "extra"), 1, "fabric.teams[0].extra: unknown key"),
        (("jobs", 0, "status"), "zombie", "fabric.jobs[0].status: "),
        (("jobs", 0, "workflow_run_id"), "missing-run", "unknown workflow run"),
        (("runs", 0, "nodes", 0, "attempts"), -1, "fabric.runs[0].nodes[0].attempts: "),
        (("idempotency", 0, "route"), 3, "fabric.idempotency[0].route: "),
    ],
)
def test_bad_state_is_refused_and_changes_nothing(
    path: tuple[Any, ...], value: Any, named: str
) -> None:
    data, _raw, org_id, _ = _populated()
    fresh = make_world(first_id=10_000).plane
    before = json.dumps(snapshot(fresh), sort_keys=True)
    with pytest.raises(ValueError, match=re.escape(named)):
        restore(fresh, _break(data, path, value))
    assert json.dumps(snapshot(fresh), sort_keys=True) == before
    assert org_id not in fresh.tenancy.organizations


def test_state_file_carries_keys_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "fabric-state.json"
    settings: dict[str, Any] = {
        "state_dir": tmp_path,
        "state_file": state,
        "tls_enabled": False,
        "services": ("fabric",),
    }
    headers = {"X-Principal-Id": ALICE}
    with run_in_thread(SEED, **settings) as first:
        base = first.url("fabric")
        created = httpx.post(
            f"{base}/v1/api-keys", json={"name": "kept", "organization_id": ACME}, headers=headers
        )
        raw = created.json()["data"]["key"]
        job = {"modality": "text", "input": {"prompt": "kept"}, "organization_id": ACME}
        job_id = httpx.post(f"{base}/v1/jobs", json=job, headers=headers).json()["data"]["id"]
        # The job's stream ends after its terminal event.
        with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=headers) as events:
            assert b"job.completed" in b"".join(events.iter_bytes())
        finished = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()["data"]
    assert raw not in state.read_text()
    document = load_state(state)
    assert document is not None
    with run_in_thread(SEED, **settings) as second:
        # What `emulator serve --state-file` does before serving (the embedded API does not).
        second.call(restore_services, state, second.emulator.services, document)
        me = httpx.get(f"{second.url('fabric')}/v1/me", headers={"Authorization": f"Bearer {raw}"})
        assert me.json()["data"]["principal_id"] == ALICE
        base = second.url("fabric")
        kept = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()["data"]
        assert (kept["status"], kept["output"]) == ("completed", finished["output"])
        # Its stream answers at once: the job is over (its events were not kept).
        with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=headers) as events:
            assert events.status_code == 200
            events.read()
