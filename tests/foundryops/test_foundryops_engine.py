"""The engine on its own (trio): shared index builds, per-key job slots, failures, progress."""

from __future__ import annotations

import secrets
from pathlib import Path

import trio
import trio.testing

from emulator.foundryops.core.access import ApiKey, KeyRing
from emulator.foundryops.core.artifacts import ArtifactStore
from emulator.foundryops.core.batch import REPORT_EVERY, match_file, records_of
from emulator.foundryops.core.credits import CreditMode, Ledger, Prices
from emulator.foundryops.core.datasets import DatasetStore
from emulator.foundryops.core.errors import InvalidRequest
from emulator.foundryops.core.generate import company_rows
from emulator.foundryops.core.ids import SequentialIds
from emulator.foundryops.core.jobs import Job, JobStatus
from emulator.foundryops.core.matcher import MatchIndex, MatchOptions, columns_for, project
from emulator.foundryops.core.state import OpsState
from emulator.foundryops.core.uploads import Presigner, UploadTable
from emulator.foundryops.engine import Engine
from emulator.platform.clock import ManualClock

NOW = 1_800_000_000.0


def make_engine(tmp_path: Path) -> Engine:
    ids = SequentialIds()
    artifacts = ArtifactStore()
    state = OpsState(
        ids=ids,
        keys=KeyRing.of([ApiKey("dev", "fo_key_0001", frozenset({"jobs"}), "free", None)]),
        tiers={},
        datasets=DatasetStore(ids, artifacts),
        artifacts=artifacts,
        uploads=UploadTable(),
        presigner=Presigner(secrets.token_bytes(32)),
        ledger=Ledger(Prices(), CreditMode.SHADOW, 100.0),
    )
    dataset = state.datasets.create("d", {"company_name": "string", "domain": "string"}, "s", NOW)
    state.datasets.append(
        dataset.dataset_id, [{"company_name": "Acme Inc", "domain": "acme.com"}], NOW
    )
    return Engine(state, ManualClock(NOW), ids, tmp_path, "whsec_x", ("127.0.0.1",))


def job(number: int) -> Job:
    return Job(f"job_{number}", "match_batch", "dev", "dss_000001", NOW, 1, None)


async def test_one_job_at_a_time_per_key_on_a_tier_of_one(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    engine = make_engine(tmp_path)
    await nursery.start(engine.run)
    release = trio.Event()

    async def blocked(_: Job) -> None:
        await release.wait()

    async def quick(_: Job) -> None:
        await trio.lowlevel.checkpoint()

    first, second = job(1), job(2)
    engine.start_job_nowait(first, 1, blocked)
    engine.start_job_nowait(second, 1, quick)
    await trio.testing.wait_all_tasks_blocked()
    assert (first.status, second.status) == (JobStatus.RUNNING, JobStatus.QUEUED)
    assert engine.state.jobs.active_for("dev") == (1, 1)
    release.set()
    await engine.wait_job_finished("job_2")
    assert (first.status, second.status) == (JobStatus.COMPLETED, JobStatus.COMPLETED)


async def test_a_failing_job_keeps_its_reason(tmp_path: Path, nursery: trio.Nursery) -> None:
    engine = make_engine(tmp_path)
    await nursery.start(engine.run)

    async def bad(_: Job) -> None:
        raise InvalidRequest("INVALID_FILE", "Line 3 is not valid JSON.", {"line": 3})

    async def bug(_: Job) -> None:
        raise KeyError("oops")

    engine.start_job_nowait(job(1), 1, bad)
    engine.start_job_nowait(job(2), 1, bug)
    failed = await engine.wait_job_finished("job_1")
    crashed = await engine.wait_job_finished("job_2")
    assert failed.error is not None
    assert (failed.status, failed.error.code, failed.error.details) == (
        JobStatus.FAILED, "INVALID_FILE", {"line": 3},
    )  # fmt: skip
    assert crashed.error is not None
    assert crashed.error.code == "INTERNAL"


async def test_concurrent_callers_share_one_index_build(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    engine = make_engine(tmp_path)
    await nursery.start(engine.run)
    snapshot = engine.state.datasets.snapshot("dss_000001")
    found: list[MatchIndex] = []

    async def get() -> None:
        found.append(await engine.index_for(snapshot))

    async with trio.open_nursery() as callers:
        for _ in range(5):
            callers.start_soon(get)
    assert engine.index_builds == 1
    assert all(index is found[0] for index in found)


def test_a_file_job_gives_each_row_the_best_match_of_matching_it_alone(tmp_path: Path) -> None:
    """The file pipeline (columns, candidates found for many rows at once) must answer as
    `MatchIndex.match` does row by row: the same best row, score and reasons."""
    import json

    engine = make_engine(tmp_path)
    dataset = engine.state.datasets.get("ds_000001")
    rows = [{"company_name": n, "domain": d} for n, d, _ in company_rows(3000, seed=8)]
    report = engine.state.datasets.append(dataset.dataset_id, rows, NOW)
    snapshot = engine.state.datasets.snapshot(report.snapshot_id)
    index = MatchIndex.build("x", project(snapshot.rows(), columns_for(snapshot.schema.names)))
    inputs: list[dict[str, object]] = [
        {"name": r["company_name"], "website": f"https://www.{r['domain']}/about"}
        if n % 3 == 0
        else {"company_name": str(r["company_name"])[:-2], "work_email": f"x@{r['domain']}"}
        for n, r in enumerate(rows[:1500:3])
    ]
    inputs += [{"company_name": "  ", "email": "a@gmail.com"}, {"other": 1}, {"name": 42}]
    source = tmp_path / "in.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in inputs))
    options = MatchOptions.from_json({"profile": "high_recall"})
    match_file(
        source, "ndjson", snapshot, index, options,
        tmp_path / "out.ndjson", "ndjson", lambda _: None, lambda: False,
    )  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "out.ndjson").read_text().splitlines()]
    record_at = records_of(snapshot)
    assert len(lines) == len(inputs)
    for number, (record, line) in enumerate(zip(inputs, lines, strict=True)):
        try:
            best = index.match(record, MatchOptions.from_json({"profile": "high_recall",
                                                               "top_n": 1}))  # fmt: skip
        except InvalidRequest:
            best = []
        assert line["input_row"] == number
        assert line["matched"] is bool(best)
        if best:
            assert (line["match_row"], line["score"]) == (best[0].row, best[0].score)
            assert line["reasons"] == ";".join(r.code for r in best[0].reasons)
            assert line["match_company_name"] == record_at(best[0].row)["company_name"]
    assert sum(line["matched"] for line in lines) >= 400
    assert lines[-3]["input_company_name"] == "  "
    assert not lines[-3]["matched"]


def test_file_matching_reports_progress_every_thousand_rows(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    dataset = engine.state.datasets.get("ds_000001")
    rows = [{"company_name": n, "domain": d} for n, d, _ in company_rows(3500, seed=5)]
    report = engine.state.datasets.append(dataset.dataset_id, rows[:1000], NOW)
    snapshot = engine.state.datasets.snapshot(report.snapshot_id)
    index = MatchIndex.build("x", project(snapshot.rows(), columns_for(snapshot.schema.names)))
    source = tmp_path / "in.ndjson"
    import json

    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seen: list[int] = []
    outcome = match_file(
        source, "ndjson", snapshot, index, MatchOptions.from_json({}),
        tmp_path / "out.csv", "csv", seen.append, lambda: False,
    )  # fmt: skip
    assert outcome.rows == 3500
    assert seen == [1000, 2000, 3000, 3500]
    assert REPORT_EVERY == 1000
    assert outcome.matched >= 1000
