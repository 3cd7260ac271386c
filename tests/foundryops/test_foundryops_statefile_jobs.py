"""`--state-file` for FoundryOps jobs: finished jobs and their results survive a restart (batch
pages, a file job's result file byte for byte), an unfinished job comes back failed and is not
run again, bad saved jobs and artifacts are refused with their path, and expired artifacts
are not written."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from foundryops_support import client, seed_with

from emulator.foundryops import persistence
from emulator.foundryops.artifactdir import ArtifactDir
from emulator.foundryops.core import ids as ids_module
from emulator.foundryops.core.artifacts import Artifact, ArtifactStore
from emulator.foundryops.core.datasets import DatasetStore
from emulator.foundryops.core.generate import company_rows
from emulator.foundryops.core.ids import RandomIds, SequentialIds
from emulator.foundryops.core.jobs import Job, JobEvent, JobTable, apply
from emulator.foundryops.core.matcher import MatchOptions
from emulator.foundryops.persistence import read_snapshot
from emulator.platform.clock import ManualClock
from emulator.platform.statefile import StateFileError, load_state, restore, save_state
from emulator.transport.server import save_state_file

DAY = 24 * 3600.0
BATCH = {
    "snapshot_id": "dss_snapshot1",
    "records": [
        {"company_name": "Acme Inc", "domain": "acme.com"},
        {"company_name": "Globex Corp", "domain": "globex.com"},
        {"company_name": "Nobody At All"},
    ],
    "options": {"profile": "high_recall", "threshold": 0.7, "top_n": 2},
}


async def restart(start_emulator: Any, first: Any, path: Path, **settings: Any) -> Any:
    """Save `first` as the server does, drop its work directory (the process and its files
    are gone), and start a second emulator from the state file."""
    await save_state_file(first.emulator, trio.Lock())
    shutil.rmtree(first.emulator.services["foundryops"].workdir)
    second = await start_emulator(
        seed_with(), services=("foundryops",), state_file=path, **settings
    )
    second.emulator.restore_state_file()
    return second


async def upload(http: Any, data: bytes) -> str:
    presigned = (await http.post("/api/v2/uploads/presign?purpose=match")).json()
    put = await http.put(presigned["upload_url"], content=data)
    assert put.status_code == 200
    return str(presigned["storage_key"])


def leads_csv(count: int) -> bytes:
    lines = ["company_name,domain"]
    lines += [f"{name},{domain}" for name, domain, _ in company_rows(count, seed=7)]
    lines += ["Acme Inc,acme.com"]
    return ("\n".join(lines) + "\n").encode()


async def test_a_finished_batch_job_and_its_pages_survive_a_restart(
    start_emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    first = await start_emulator(seed_with(), services=("foundryops",), state_file=path)
    async with client(first) as http:
        job_id = (await http.post("/api/v2/match/batch", json=BATCH)).json()["job_id"]
        await first.emulator.services["foundryops"].engine.wait_job_finished(job_id)
        before = [
            (await http.get(f"/api/v2/jobs/{job_id}{query}")).json()
            for query in ("", "/results?limit=2", "/results?offset=2&limit=2")
        ]
    second = await restart(start_emulator, first, path)
    instance = second.emulator.services["foundryops"]
    async with client(second) as http:
        after = [
            (await http.get(f"/api/v2/jobs/{job_id}{query}")).json()
            for query in ("", "/results?limit=2", "/results?offset=2&limit=2")
        ]
        again = await http.post("/api/v2/match/batch", json=BATCH)
        await instance.engine.wait_job_finished(again.json()["job_id"])
    assert before[0]["status"] == "completed"
    assert before[1]["results"][0]["matches"]  # the pages hold real matches
    assert after == before
    assert instance.ops.state.jobs.get(job_id).options == MatchOptions.from_json(BATCH["options"])
    assert again.status_code == 202
    assert again.json()["job_id"] != job_id
    assert instance.ops.state.jobs.get(again.json()["job_id"]).status.value == "completed"


async def test_a_finished_file_job_downloads_the_same_bytes_after_a_restart(
    start_emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    first = await start_emulator(seed_with(), services=("foundryops",), state_file=path)
    async with client(first) as http:
        source_key = await upload(http, leads_csv(500))
        submitted = await http.post(
            "/api/v2/match/files",
            json={"snapshot_id": "dss_snapshot1", "source_key": source_key,
                  "output_format": "parquet"},
        )  # fmt: skip
        job_id = submitted.json()["job_id"]
        await first.emulator.services["foundryops"].engine.wait_job_finished(job_id)
        status = (await http.get(f"/api/v2/jobs/{job_id}")).json()
        before = await http.get(f"/api/v2/jobs/{job_id}/results")
    second = await restart(start_emulator, first, path)
    async with client(second) as http:
        restored = (await http.get(f"/api/v2/jobs/{job_id}")).json()
        after = await http.get(f"/api/v2/jobs/{job_id}/results")
    assert status["status"] == "completed"
    assert status["progress"]["total"] == 501
    assert before.status_code == 200
    assert len(before.content) > 1000
    assert restored == status
    assert after.status_code == 200
    assert after.content == before.content
    assert after.headers["content-type"] == before.headers["content-type"]
    # The bytes are in the directory beside the state file, never inside the JSON.
    artifact_id = second.emulator.services["foundryops"].ops.state.jobs.get(job_id)
    kept = path.with_name("state.json.artifacts") / str(artifact_id.results_artifact_id)
    assert kept.read_bytes() == before.content
    assert b"PAR1" not in path.read_bytes()


async def test_an_unfinished_job_comes_back_failed_and_is_not_run_again(
    start_emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    first = await start_emulator(seed_with(), services=("foundryops",), state_file=path)
    state = first.emulator.services["foundryops"].ops.state
    options = MatchOptions.from_json(None)
    queued, running = (
        Job(job_id, "match_batch", "dev", "dss_snapshot1", 1.0, 3, options,
            callback_url="http://127.0.0.1:9/hook", credits_charged=3.0)
        for job_id in ("job_queued", "job_running")
    )  # fmt: skip
    apply(running, JobEvent.START, 2.0)
    # As if the engine had accepted them and not finished before the process ended.
    state.jobs.add(queued)
    state.jobs.add(running)
    assert state.jobs.active_for("dev") == (1, 1)
    org = next(key.org for key in state.keys.keys.values() if key.key_id == "dev")
    balance = state.ledger.balance("dev", org).balance

    second = await restart(start_emulator, first, path)
    restored = second.emulator.services["foundryops"]
    # The emulator failed them, not the caller: the 3 + 3 credits they were charged go back.
    assert restored.ops.state.ledger.balance("dev", org).balance == balance + 6.0
    async with client(second) as http:
        statuses = [
            (await http.get(f"/api/v2/jobs/{job_id}")).json()
            for job_id in ("job_queued", "job_running")
        ]
        results = await http.get("/api/v2/jobs/job_running/results")
        fresh = await http.post("/api/v2/match/batch", json=BATCH)
        await restored.engine.wait_job_finished(fresh.json()["job_id"])
    for status in statuses:
        assert status["status"] == "failed"
        assert status["error"]["code"] == "EMULATOR_RESTARTED"
        assert "restarted before the job finished" in status["error"]["message"]
        assert status["completed_at"] is not None
    assert results.status_code == 409
    assert results.json()["error"]["details"]["error_code"] == "EMULATOR_RESTARTED"
    jobs = restored.ops.state.jobs
    assert jobs.get("job_running").started_at == 2.0
    assert jobs.get("job_queued").credits_charged == 0.0
    # Neither takes a slot, neither ran again, and no callback was sent for either.
    assert jobs.active_for("dev") == (0, 0)
    assert fresh.status_code == 202
    assert [d.job_id for d in restored.ops.state.deliveries.values()] == []
    assert jobs.get("job_queued").status.value == "failed"
    # A later restart finds them failed already: nothing is given back twice.
    settled = restored.ops.state.ledger.balance("dev", org).balance
    third = await restart(start_emulator, second, path)
    assert third.emulator.services["foundryops"].ops.state.ledger.balance("dev", org).balance == (
        settled
    )


async def test_expired_artifacts_are_not_written_and_answer_410_after_a_restart(
    start_emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    directory = path.with_name("state.json.artifacts")
    clock = ManualClock()
    first = await start_emulator(
        seed_with(), services=("foundryops",), state_file=path, clock=clock
    )
    instance = first.emulator.services["foundryops"]
    async with client(first) as http:
        source_key = await upload(http, leads_csv(20))
        submitted = await http.post(
            "/api/v2/match/files",
            json={"snapshot_id": "dss_snapshot1", "source_key": source_key},
        )
        job_id = submitted.json()["job_id"]
        await instance.engine.wait_job_finished(job_id)
        appended = await http.post(
            "/api/v2/datasets/ds_demo/append",
            json={"records": [{"company_name": "Kept"}, {"company_name": ["bad"]}]},
        )
    results_id = instance.ops.state.jobs.get(job_id).results_artifact_id
    rejects_id = appended.json()["rejects_url"].rsplit("/", 1)[1]
    await save_state_file(first.emulator, trio.Lock())
    assert sorted(p.name for p in directory.iterdir()) == sorted([results_id, rejects_id])

    clock.advance(DAY + 1)
    await save_state_file(first.emulator, trio.Lock())
    saved = load_state(path)
    assert saved is not None
    assert saved["foundryops"]["artifacts"] == []
    # The previous save's files stay one more save (the state file on disk named them until
    # this save replaced it); the next save deletes them.
    assert len(list(directory.iterdir())) == 2
    await save_state_file(first.emulator, trio.Lock())
    assert list(directory.iterdir()) == []

    second = await restart(start_emulator, first, path, clock=clock)
    async with client(second) as http:
        status = await http.get(f"/api/v2/jobs/{job_id}")
        results = await http.get(f"/api/v2/jobs/{job_id}/results")
        rejects = await http.get(f"/api/v2/artifacts/{rejects_id}")
    assert status.json()["status"] == "completed"
    assert (results.status_code, results.json()["error"]["code"]) == (410, "ARTIFACT_EXPIRED")
    assert rejects.status_code == 404  # not kept at all: nothing named it after expiry


async def test_a_corrupt_job_is_refused_with_its_path_and_changes_nothing(
    start_emulator: Any, tmp_path: Path
) -> None:
    path = tmp_path / "state.json"
    running = await start_emulator(seed_with(), services=("foundryops",), state_file=path)
    instance = running.emulator.services["foundryops"]
    async with client(running) as http:
        job_id = (await http.post("/api/v2/match/batch", json=BATCH)).json()["job_id"]
        await instance.engine.wait_job_finished(job_id)
        appended = await http.post(
            "/api/v2/datasets/ds_demo/append",
            json={"records": [{"company_name": "Kept"}, {"company_name": ["bad"]}]},
        )
    assert appended.status_code == 201
    good = instance.snapshot()
    assert len(good["artifacts"]) == 1
    fresh = await start_emulator(seed_with(), services=("foundryops",), state_file=path)
    target = fresh.emulator.services["foundryops"]

    bad = copy.deepcopy(good)
    bad["jobs"][0]["results"][1] = "not a result"
    with pytest.raises(StateFileError, match=re.escape("foundryops.jobs[0].results[1]: expected")):
        restore(path, fresh.emulator.services, {"foundryops": bad})
    (path.with_name("state.json.artifacts") / good["artifacts"][0]["artifact_id"]).unlink()
    with pytest.raises(StateFileError, match=r"foundryops\.artifacts\[0\]: its file .* missing"):
        restore(path, fresh.emulator.services, {"foundryops": good})
    assert target.ops.state.jobs.jobs == {}
    assert target.ops.state.artifacts.artifacts == {}
    assert [p.name for p in target.workdir.iterdir()] == []


GOOD: dict[str, Any] = {
    "version": 1,
    "datasets": [],
    "accounts": [],
    "artifacts": [],
    "jobs": [
        {
            "job_id": "job_one",
            "kind": "match_file",
            "key_id": "dev",
            "snapshot_id": "dss_snapshot1",
            "created_at": 1.0,
            "total": 10,
            "options": {"profile": "balanced"},
            "callback_url": None,
            "output_format": "csv",
            "source_key": "uploads/x",
            "status": "failed",
            "processed": 4,
            "started_at": 2.0,
            "finished_at": 3.0,
            "progress_at": 2.5,
            "error": {"code": "INVALID_FILE", "message": "Bad row.", "details": {"row": 4}},
            "results_artifact_id": None,
            "results": None,
            "matched": 0,
            "credits_charged": 0.0,
        }
    ],
}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("jobs", 0, "job_id"), "x", "jobs[0].job_id: expected an id starting with job_"),
        (("jobs", 0, "kind"), "match_all", "jobs[0].kind: must be one of"),
        (("jobs", 0, "status"), "done", "jobs[0].status: must be one of"),
        (("jobs", 0, "options"), {"top_n": 0}, "jobs[0].options: top_n must be"),
        (("jobs", 0, "processed"), 11, "jobs[0].processed: more than the job's total"),
        (("jobs", 0, "error"), None, "jobs[0]: a failed job needs its error"),
        (("jobs", 0, "error", "details"), [1], "jobs[0].error.details: expected an object"),
        (("jobs", 0, "output_format"), "xml", "jobs[0].output_format: must be one of"),
        (("jobs", 0, "status"), "completed", "a completed file job needs its results_artifact"),
        (("jobs", 0, "finished_at"), None, "jobs[0]: a failed job needs its finished_at"),
        (("jobs", 0, "credits_charged"), "3", "jobs[0].credits_charged: expected a number"),
    ],
)
def test_malformed_saved_jobs_name_their_path(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    assert read_snapshot(GOOD, set(), now=10.0).jobs[0].error is not None
    data = copy.deepcopy(GOOD)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        read_snapshot(data, set(), now=10.0)


def test_a_saved_job_may_not_replace_a_live_one_or_repeat() -> None:
    with pytest.raises(ValueError, match=re.escape("jobs[0].job_id: a job with this id exists")):
        read_snapshot(GOOD, set(), live_job_ids={"job_one"})
    data = copy.deepcopy(GOOD)
    data["jobs"].append(copy.deepcopy(data["jobs"][0]))
    with pytest.raises(ValueError, match=re.escape("jobs[1].job_id: duplicate job id")):
        read_snapshot(data, set())


def _artifact(artifact_id: str, created_at: float, data: bytes) -> Artifact:
    return Artifact(artifact_id, "rejects", "application/gzip", f"{artifact_id}.gz",
                    created_at, created_at + DAY, data=data)  # fmt: skip


def test_the_artifact_directory_keeps_the_newest_within_its_bound(tmp_path: Path) -> None:
    directory = ArtifactDir(tmp_path / "s.json.artifacts", max_bytes=25)
    artifacts = [_artifact(f"art_{n}", float(n), bytes([n]) * 10) for n in (3, 2, 1)]
    (tmp_path / "s.json.artifacts").mkdir()
    (tmp_path / "s.json.artifacts" / "notes.txt").write_text("not ours")
    (tmp_path / "s.json.artifacts" / ".art_9.tmp").write_text("a crash mid-write")
    kept = directory.keep(artifacts)
    assert kept == {"art_3": 10, "art_2": 10}
    names = sorted(p.name for p in directory.path.iterdir())
    assert names == ["art_2", "art_3", "notes.txt"]
    assert (directory.path / "art_3").read_bytes() == bytes([3]) * 10
    assert directory.problem("art_3", 10) is None
    assert directory.problem("art_3", 11) is not None
    assert directory.problem("art_1", 10) is not None
    assert directory.problem("../s.json", 1) is not None


def test_restored_ids_are_never_handed_out_again(monkeypatch: pytest.MonkeyPatch) -> None:
    sequential = SequentialIds()
    sequential.reserve(["job_000007", "art_000002", "ds_kept"])
    assert (sequential.new("job"), sequential.new("art"), sequential.new("ds")) == (
        "job_000008",
        "art_000003",
        "ds_000001",
    )
    draws = iter([5, 5, 6])
    monkeypatch.setattr(ids_module.secrets, "randbits", lambda bits: next(draws))
    frozen = RandomIds(lambda: 100.0)
    first = frozen.new("job")
    frozen.reserve([first])
    assert frozen.new("job") not in (first,)


def test_a_file_stays_while_a_state_file_on_disk_may_name_it(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    directory = ArtifactDir.beside(state)
    kept = tmp_path / "s.json.artifacts" / "art_1"

    def save_lands(text: str) -> None:
        # As the platform saves: a new file renamed over the old one.
        (tmp_path / "new").write_text(text)
        (tmp_path / "new").replace(state)

    assert directory.keep([_artifact("art_1", 1.0, b"rejects")]) == {"art_1": 7}
    save_lands("names art_1")
    assert directory.keep([]) == {}  # art_1 is gone (a reset), but the file on disk names it
    assert kept.exists()
    # That save failed: the file on disk still names art_1, however often the saves fail.
    assert directory.keep([]) == {}
    assert directory.keep([]) == {}
    assert kept.exists()
    save_lands("names nothing")
    directory.keep([])
    assert not kept.exists()


def test_the_loop_renders_only_unfinished_jobs_and_the_thread_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = MatchOptions.from_json(None)
    table = JobTable()
    for job_id in ("job_done", "job_queued"):
        table.add(Job(job_id, "match_batch", "dev", "dss_snapshot1", 1.0, 1, options))
    done = table.get("job_done")
    apply(done, JobEvent.START, 2.0)
    done.results = [{"input_index": 0, "matches": []}]
    apply(done, JobEvent.COMPLETE, 3.0)
    store = DatasetStore(SequentialIds(), ArtifactStore())
    expected = persistence.snapshot(store, {}, set(), table)
    rendered: list[str] = []
    real = persistence._job_json
    monkeypatch.setattr(
        persistence, "_job_json", lambda job: rendered.append(job.job_id) or real(job)
    )

    finish = persistence.capture(store, {}, set(), table, lazy=True)
    assert rendered == ["job_queued"]  # a finished job no longer changes: rendered later
    path = tmp_path / "state.json"
    save_state(path, {"foundryops": finish})
    assert rendered == ["job_queued", "job_done"]
    assert load_state(path) == {"foundryops": expected}
