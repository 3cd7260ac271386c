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
import trio
from fabric_server import ACME, SEED, start_fabric
from fabric_support import ALICE, CAROL, DAVE, EVE, dev, make_world

from emulator.embedded import run_in_thread
from emulator.fabric import persistence
from emulator.fabric.assetfiles import AssetFiles
from emulator.fabric.core.config import PlaneConfig
from emulator.fabric.core.errors import Conflict
from emulator.fabric.core.jobs import JobStatus
from emulator.fabric.core.plane import ControlPlane
from emulator.fabric.core.tenancy import Role
from emulator.fabric.core.workflows import NodeStatus, RunStatus, WorkflowRun
from emulator.fabric.persistence import RESTARTED, capture, restore, snapshot
from emulator.platform.statefile import load_state, save_state
from emulator.platform.statefile import restore as restore_services


def _finish(plane: ControlPlane, run: WorkflowRun) -> None:
    """What the engine does to a run whose every node succeeds."""
    plane.run_start(run)
    for key in run.nodes:
        plane.node_ready(run, key)
        plane.node_start(run, key)
        plan = plane.catalog.plan(plane.node_request(run, key), plane.random)
        plane.node_complete(run, key, plan)
    plane.run_finish(run)


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
    # One job that finished (driven through the plane's hooks as the engine does: no executor
    # here), one still pending, and a workflow run that never started.
    done, _ = plane.submit_job(
        dev(CAROL),
        {"modality": "text", "input": {"prompt": "p"}, "organization_id": world.acme},
        header_key="done-key",
    )
    _finish(plane, plane.runs[done.workflow_run_id])
    assert done.status is JobStatus.COMPLETED
    plane.submit_job(
        dev(CAROL), {"modality": "text", "input": {"prompt": "q"}, "organization_id": world.acme}
    )
    plane.create_run(dev(CAROL), {"workflow_definition_id": definition.id})
    data = json.loads(json.dumps(snapshot(plane)))  # what the file holds
    assert raw not in json.dumps(data)
    assert key.key_hash in json.dumps(data)
    assert team.id in json.dumps(data)
    return data, raw, org.id, definition.id


def test_the_loop_renders_only_what_may_change_and_the_thread_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    world = make_world()
    plane = world.plane
    body = {"modality": "text", "input": {"prompt": "p"}, "organization_id": world.acme}
    finished = []
    for _ in range(3):
        job, _ = plane.submit_job(dev(CAROL), body)
        _finish(plane, plane.runs[job.workflow_run_id])
        finished.append(job.id)
    pending, _ = plane.submit_job(dev(CAROL), body)
    expected = json.loads(json.dumps(snapshot(plane)))
    rendered: list[str] = []
    real_job, real_run = persistence._job_json, persistence._run_json
    monkeypatch.setattr(
        persistence, "_job_json", lambda job: rendered.append(job.id) or real_job(job)
    )
    monkeypatch.setattr(
        persistence, "_run_json", lambda run: rendered.append(run.id) or real_run(run)
    )

    finish = capture(plane, lazy=True)
    # On the loop: only the job (and its run) that has not finished.
    assert rendered == [pending.id, pending.workflow_run_id]
    # A finished job's record is only read later, in the worker thread, and it no longer
    # changes; what the file holds is what a snapshot taken at once would have held.
    path = tmp_path / "state.json"
    save_state(path, {"fabric": finish})
    assert set(rendered) >= set(finished)
    assert load_state(path) == {"fabric": expected}


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
    assert jobs["p"].output == data["jobs"][0]["output"] is not None
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


def test_logs_come_back_and_the_event_sequence_continues() -> None:
    data, _raw, _org_id, definition_id = _populated()
    assert data["usage"]
    assert data["audit"]
    assert data["events"]
    fresh = make_world(first_id=10_000).plane
    restore(fresh, data)
    again = json.loads(json.dumps(snapshot(fresh)))
    # Usage and audit exactly as saved, in order.
    assert again["usage"] == data["usage"]
    assert again["audit"] == data["audit"]
    # The saved events, then what the restore ended, continuing the sequence.
    saved = data["events"]
    assert again["events"][: len(saved)] == saved
    added = again["events"][len(saved) :]
    assert [e["sequence"] for e in added] == list(
        range(saved[-1]["sequence"] + 1, saved[-1]["sequence"] + 1 + len(added))
    )
    jobs = {job.input["prompt"]: job for job in fresh.jobs.values()}
    (run,) = [r for r in fresh.runs.values() if r.workflow_definition_id == definition_id]
    pending_run = jobs["q"].workflow_run_id
    assert [(e["name"], e["run_id"]) for e in added] == [
        ("workflow.node.skipped", pending_run),
        ("workflow.run.failed", pending_run),
        ("job.failed", pending_run),
        ("workflow.node.skipped", run.id),
        ("workflow.run.failed", run.id),
    ]
    assert added[2]["job_id"] == jobs["q"].id
    assert added[2]["payload"] == {"error": RESTARTED}
    # A resume from a saved event starts right after it; the next event follows the last.
    middle = saved[len(saved) // 2]
    assert fresh.events.resume_point(middle["id"]) == middle["sequence"]
    first_after = next(fresh.events.after(middle["sequence"]))
    assert first_after.sequence == middle["sequence"] + 1
    org_id = jobs["p"].organization_id
    fresh.create_team(dev(DAVE), {"organization_id": org_id, "slug": "later", "name": "L"})
    assert fresh.events.last_sequence == added[-1]["sequence"] + 1
    # A job stream's candidates end with the failure, so the stream closes.
    assert [e.name for e in fresh.events.of_job(jobs["q"].id)][-1] == "job.failed"


def test_a_smaller_retention_keeps_the_newest_events() -> None:
    data, *_ = _populated()
    fresh = make_world(config=PlaneConfig(event_retention=3), first_id=10_000).plane
    restore(fresh, data)
    kept = [event.sequence for event in fresh.events]
    assert len(kept) == 3
    assert kept == list(range(kept[0], kept[0] + 3))
    assert fresh.events.sequence_of(data["events"][0]["id"]) is None


def test_a_file_without_the_logs_still_loads() -> None:
    data, *_ = _populated()
    for section in ("events", "usage", "audit"):
        del data[section]
    fresh = make_world(first_id=10_000).plane
    restore(fresh, data)
    assert list(fresh.usage.records) == []
    (pending,) = [job for job in fresh.jobs.values() if job.status is JobStatus.FAILED]
    # Its stream (the job's `job.` events) still ends with the failure.
    names = [e.name for e in fresh.events.of_job(pending.id)]
    assert [name for name in names if name.startswith("job.")] == ["job.failed"]


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
        (("events",), {}, "fabric.events: "),
        (("events", 1, "sequence"), "2", "fabric.events[1].sequence: "),
        (("events", 2, "sequence"), 99, "fabric.events[2].sequence: must be 3"),
        (("events", 1, "payload"), [1], "fabric.events[1].payload: must be an object"),
        (("events", 1, "name"), "", "fabric.events[1].name: "),
        (("events", 1, "secret"), "x", "fabric.events[1].secret: unknown key"),
        (("usage", 0, "input_tokens"), -1, "fabric.usage[0].input_tokens: "),
        (("usage", 0, "estimated_cost_usd"), "free", "fabric.usage[0].estimated_cost_usd: "),
        (("audit", 0, "action"), 5, "fabric.audit[0].action: "),
        (("audit", 0, "metadata"), "x", "fabric.audit[0].metadata: must be an object"),
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


def test_a_repeated_event_id_is_refused_and_changes_nothing() -> None:
    data, *_ = _populated()
    data["events"][2]["id"] = data["events"][0]["id"]
    fresh = make_world(first_id=10_000).plane
    before = json.dumps(snapshot(fresh), sort_keys=True)
    with pytest.raises(ValueError, match=re.escape("fabric.events[2]: duplicate event id")):
        restore(fresh, data)
    assert json.dumps(snapshot(fresh), sort_keys=True) == before


def _with_asset(tmp_path: Path) -> tuple[dict[str, Any], AssetFiles, str]:
    """A saved state naming one uploaded asset whose bytes are in `files`."""
    world = make_world()
    upload = world.plane.begin_upload(dev(CAROL), world.acme, "a.bin", "application/octet-stream")
    upload.add(b"first chunk;")
    upload.add(b"second chunk")
    asset = world.plane.finish_upload(dev(CAROL), upload)
    files = AssetFiles.beside(tmp_path / "state.json")
    files.write(asset)
    return json.loads(json.dumps(snapshot(world.plane, files.kept))), files, asset.id


def test_assets_come_back_from_the_directory_beside_the_file(tmp_path: Path) -> None:
    data, files, asset_id = _with_asset(tmp_path)
    assert "chunk" not in json.dumps(data)  # the bytes are never in the JSON
    assert (files.directory / asset_id).stat().st_mode & 0o777 == 0o600
    orphan = files.directory / "uploaded-after-the-last-save"
    orphan.write_bytes(b"x")
    fresh = make_world(first_id=10_000).plane
    restore(fresh, data, AssetFiles.beside(tmp_path / "state.json"))
    asset = fresh.get_asset(dev(CAROL), asset_id)
    assert b"".join(asset.iter_bytes()) == b"first chunk;second chunk"
    assert fresh.assets.total_bytes == asset.size_bytes == 24
    # Files no saved asset names are pruned.
    assert sorted(p.name for p in files.directory.iterdir()) == [asset_id]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("edit", "fabric.assets[0]: the bytes in "),
        ("delete", "fabric.assets[0]: cannot read its bytes from "),
        ("bad-id", "fabric.assets[0].id: "),
        ("no-directory", "fabric.assets[0]: saved assets need their directory"),
    ],
)
def test_a_damaged_asset_is_refused_and_changes_nothing(
    tmp_path: Path, damage: str, named: str
) -> None:
    data, files, asset_id = _with_asset(tmp_path)
    given: AssetFiles | None = files
    if damage == "edit":
        (files.directory / asset_id).write_bytes(b"first chunk;SECOND chunk")
    elif damage == "delete":
        (files.directory / asset_id).unlink()
    elif damage == "bad-id":
        data["assets"][0]["id"] = "../state.json"
    else:
        given = None
    fresh = make_world(first_id=10_000).plane
    before = json.dumps(snapshot(fresh), sort_keys=True)
    with pytest.raises(ValueError, match=re.escape(named)):
        restore(fresh, data, given)
    assert json.dumps(snapshot(fresh), sort_keys=True) == before
    assert fresh.assets.assets == {}


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
        # The embedded emulator has restored the file on start, as `emulator serve` does;
        # restoring the same document again lays the same state over it.
        second.call(restore_services, state, second.emulator.services, document)
        me = httpx.get(f"{second.url('fabric')}/v1/me", headers={"Authorization": f"Bearer {raw}"})
        assert me.json()["data"]["principal_id"] == ALICE
        base = second.url("fabric")
        kept = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()["data"]
        assert (kept["status"], kept["output"]) == ("completed", finished["output"])
        # Its stream replays the kept events and closes after the terminal one.
        with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=headers) as events:
            assert events.status_code == 200
            assert b"job.completed" in events.read()


async def test_saves_taken_while_jobs_run_each_restore_whole(
    nursery: Any, state_dir: Path, tmp_path: Path
) -> None:
    """The loop's half of a save and the worker's half see one moment: every file saved while
    jobs are submitted and run passes the reader's checks (events in sequence, each job with
    its run) in a fresh plane."""

    from emulator.platform.statefile import save_state

    server = await start_fabric(nursery, state_dir)
    files: list[Path] = []
    submitted = 0

    async def submit(client: httpx.AsyncClient) -> None:
        nonlocal submitted
        body = {"modality": "text", "input": {"prompt": "p"}, "organization_id": ACME}
        for _ in range(40):
            answer = await client.post("/v1/jobs", json=body, headers={"X-Principal-Id": CAROL})
            assert answer.status_code == 201, answer.text
            submitted += 1

    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=30) as client,
        trio.open_nursery() as inner,
    ):
        for _ in range(4):
            inner.start_soon(submit, client)
        while submitted < 160:
            path = tmp_path / f"state-{len(files)}.json"
            finish = server.instance.capture()
            await trio.to_thread.run_sync(save_state, path, {"fabric": finish})
            files.append(path)
    assert len(files) >= 2
    for path in files:
        saved = load_state(path)
        assert saved is not None
        data = saved["fabric"]
        # One moment: each job's status agrees with its run's and with the saved events (all
        # retained here), whichever half of the save rendered it.
        ended = {
            e["job_id"] for e in data["events"] if e["name"] in ("job.completed", "job.failed")
        }
        runs = {run["id"]: run["status"] for run in data["runs"]}
        for job in data["jobs"]:
            assert (job["status"] in ("completed", "failed")) == (job["id"] in ended), job
            finished = runs[job["workflow_run_id"]] in ("completed", "failed", "cancelled")
            assert finished == (job["status"] in ("completed", "failed")), job
        fresh = make_world(first_id=1_000_000).plane
        restore(fresh, data)
        assert len(fresh.jobs) == len(data["jobs"])
