"""A bounded soak of the compute-module job plane: thousands of jobs, mixed sync and async, through
8 runtimes (2 served by the real Python compute-module library as subprocesses over HTTPS, 6 by
simulated pollers here), while the test kills a module process mid-job, disconnects synchronous
callers while they wait, vanishes mid-upload, resets a runtime and posts duplicate results.

Invariants at the end: every job reached exactly one terminal state; no job ran twice unless it
was re-queued in between; every succeeded result is byte-identical (SHA-256) to what its runtime
sent first; no caller waited past its execute timeout; no poll outlived its poll timeout and no
poller was left hanging; once the retention has passed, the job table is empty.

The job table's transitions are observed by wrapping `JobTable.transition` (test-only).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from conftest import Running, StartEmulator
from rawhttp import connect, request_bytes

from emulator.foundry.core import jobs as jobs_module
from emulator.foundry.core.jobs import Job, JobEvent, JobState

# Measured on a 2-CPU machine: ~40 jobs/s end to end (the emulator, the test's clients and two
# Python module processes share the CPUs), so 2,500 jobs take about a minute. SOAK_JOBS=20000
# runs the full size where more cores are available.
JOBS = int(os.environ.get("SOAK_JOBS", "2500"))
RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
SUBMIT = CONTOUR + "/deployed-apps/jobs"
JANE = {"Authorization": "Bearer soak-token"}
PY_RUNTIMES = ["py-0", "py-1"]
SIM_RUNTIMES = [f"sim-{i}" for i in range(2, 8)]
ALL_RUNTIMES = PY_RUNTIMES + SIM_RUNTIMES
POLLERS_PER_SIM = 6
SUBMITTERS = 96
POLL_TIMEOUT = 1.0
EXECUTE_TIMEOUT = 20.0
RETENTION = 2.0


def app(runtime: str) -> str:
    return f"ri.foundry.main.deployed-app.{runtime}"


SEED: dict[str, Any] = {
    "tokens": {"soak-token": {"username": "jane"}},
    "foundry": {
        "users": [{"username": "jane"}],
        "compute_modules": {
            "runtimes": [
                {
                    "runtime_id": runtime,
                    "module_auth_token": f"token-{runtime}",
                    # The killed module's jobs go back to the queue for its successor.
                    "on_restart": "requeue" if runtime == "py-0" else "fail",
                }
                for runtime in ALL_RUNTIMES
            ],
            "deployed_apps": [
                {"deployed_app_rid": app(runtime), "runtime_id": runtime}
                for runtime in ALL_RUNTIMES
            ],
            "limits": {
                "poll_timeout": POLL_TIMEOUT,
                "execute_timeout": EXECUTE_TIMEOUT,
                "job_timeout": 20,
                "queue_depth": JOBS,
                "retention_seconds": RETENTION,
                "max_retained_jobs": JOBS * 2,
            },
        },
    },
}

MODULE = """
from compute_modules.annotations import function


@function
def echo(context, event):
    return {"i": event["i"], "s": "y" * (event["i"] % 13)}
"""


def py_result(tag: int) -> bytes:
    """What the Python library sends for `echo`: json.dumps of the return value."""
    return json.dumps({"i": tag, "s": "y" * (tag % 13)}).encode("utf-8")


def sim_result(tag: int) -> bytes:
    return hashlib.sha256(str(tag).encode()).hexdigest().encode() * (1 + tag % 4)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def runtime_of(tag: int) -> str:
    return ALL_RUNTIMES[tag % len(ALL_RUNTIMES)]


@attrs.define
class Book:
    """What the test saw, from both sides."""

    events: dict[str, list[JobEvent]] = attrs.field(factory=lambda: defaultdict(list))
    terminal: dict[str, tuple[JobState, str | None]] = attrs.field(factory=dict)
    terminal_count: Counter[str] = attrs.field(factory=Counter)
    tag_of: dict[str, int] = attrs.field(factory=dict)
    runtime_of: dict[str, str] = attrs.field(factory=dict)
    # What simulated runtimes sent first (complete uploads), by job id.
    sent: dict[str, str] = attrs.field(factory=dict)
    sync_waits: list[float] = attrs.field(factory=list)
    sync_outcomes: Counter[str] = attrs.field(factory=Counter)
    poll_waits: list[float] = attrs.field(factory=list)
    duplicate_statuses: Counter[int] = attrs.field(factory=Counter)
    vanished_tags: set[int] = attrs.field(factory=set)
    cut_tags: set[int] = attrs.field(factory=set)
    completed: int = 0
    progress: trio.Event = attrs.field(factory=trio.Event)
    progress_target: int = 0

    def record(self, job: Job, event: JobEvent) -> None:
        self.events[job.job_id].append(event)
        self.tag_of.setdefault(job.job_id, int(job.query["i"]))
        self.runtime_of.setdefault(job.job_id, job.runtime_id)
        if job.state.finished:
            self.terminal_count[job.job_id] += 1
            body = job.result.body() if job.result is not None else None
            digest = sha(body) if body is not None and job.state is JobState.SUCCEEDED else None
            self.terminal[job.job_id] = (job.state, digest)

    def done_one(self) -> None:
        self.completed += 1
        if self.completed >= self.progress_target:
            self.progress.set()

    async def reach(self, count: int) -> None:
        while self.completed < count:
            self.progress_target = count
            self.progress = trio.Event()
            await self.progress.wait()


@pytest.fixture
def book(monkeypatch: pytest.MonkeyPatch) -> Book:
    book = Book()
    original = jobs_module.JobTable.transition

    def transition(
        self: jobs_module.JobTable, job: Job, event: JobEvent, now: float, **kwargs: Any
    ) -> list[str]:
        forgotten = original(self, job, event, now, **kwargs)
        book.record(job, event)
        return forgotten

    monkeypatch.setattr(jobs_module.JobTable, "transition", transition)
    return book


@attrs.define
class Modules:
    """Real Python compute-module processes, one per runtime session."""

    running: Running
    tmp_path: Path
    sessions: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    processes: list[trio.Process] = attrs.field(factory=list)

    async def start(self, runtime: str) -> trio.Process:
        if runtime not in self.sessions:
            async with self.running.client() as client:
                answer = await client.post(RUNTIMES, json={"runtimeId": runtime})
            assert answer.status_code == 200, answer.text
            self.sessions[runtime] = answer.json()
            (self.tmp_path / f"token-{runtime}").write_text(answer.json()["moduleAuthToken"])
        env = {
            k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
        }
        env.update(self.sessions[runtime]["environment"])
        env.update(
            MODULE_AUTH_TOKEN=str(self.tmp_path / f"token-{runtime}"), MAX_CONCURRENT_TASKS="4"
        )
        script = self.tmp_path / "module.py"
        script.write_text(MODULE)
        log = (self.tmp_path / f"module-{runtime}-{len(self.processes)}.log").open("wb")
        process = await trio.lowlevel.open_process(
            [sys.executable, str(script)], env=env, stdout=log, stderr=log, start_new_session=True
        )
        self.processes.append(process)
        return process

    def kill(self, process: trio.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
async def modules(start_emulator: StartEmulator, tmp_path: Path) -> AsyncIterator[Modules]:
    running = await start_emulator(SEED)
    modules = Modules(running, tmp_path)
    yield modules
    for process in modules.processes:
        modules.kill(process)
        with trio.move_on_after(10):
            await process.wait()


async def sim_poller(
    running: Running, runtime: str, book: Book, stop: trio.Event, index: int
) -> None:
    module = {"Module-Auth-Token": f"token-{runtime}"}
    base = f"{RUNTIMES}/{runtime}"
    vanished = 0
    async with running.client(timeout=POLL_TIMEOUT + 10) as client:
        while not stop.is_set():
            started = trio.current_time()
            polled = await client.get(f"{base}/job", headers=module)
            book.poll_waits.append(trio.current_time() - started)
            if polled.status_code == 204:
                continue
            assert polled.status_code == 200, polled.text
            job = polled.json()["computeModuleJobV1"]
            job_id, tag = job["jobId"], job["query"]["i"]
            body = sim_result(tag)
            if tag % 97 == 3 and vanished < 5:
                # A module that dies mid-upload, then comes back and sends it whole.
                vanished += 1
                book.vanished_tags.add(tag)
                await vanish_mid_upload(running, runtime, job_id, body)
            posted = await client.post(f"{base}/results/{job_id}", headers=module, content=body)
            if posted.status_code == 204:
                book.sent.setdefault(job_id, sha(body))
            else:
                # The job ended meanwhile (its runtime was reset): a clear 409.
                assert posted.status_code == 409, posted.text
            if tag % 50 == 1:
                again = await client.post(
                    f"{base}/results/{job_id}", headers=module, content=b"duplicate " + body
                )
                book.duplicate_statuses[again.status_code] += 1


async def vanish_mid_upload(running: Running, runtime: str, job_id: str, body: bytes) -> None:
    stream, host = await connect(running.http_url)
    head = request_bytes(
        "POST",
        f"{RUNTIMES}/{runtime}/results/{job_id}",
        host,
        {"Module-Auth-Token": f"token-{runtime}"},
        body,
    )
    async with stream:
        await stream.send_all(head[: len(head) - len(body) // 2])
    # Closed with half the body sent: the upload does not count.


async def submitter(
    running: Running, book: Book, tags: trio.MemoryReceiveChannel[int], client: httpx.AsyncClient
) -> None:
    async for tag in tags:
        runtime = runtime_of(tag)
        call = {"deployedAppRid": app(runtime), "queryType": "echo", "query": {"i": tag}}
        if tag % 2 == 0:
            started = trio.current_time()
            with (
                trio.move_on_after(0.005 * (tag % 7)) if tag % 40 == 0 else contextlib.nullcontext()
            ):
                expected = py_result(tag) if runtime in PY_RUNTIMES else sim_result(tag)
                try:
                    response: httpx.Response | None = await client.post(
                        EXECUTE, headers=JANE, json=call
                    )
                except httpx.RemoteProtocolError:
                    # Its module vanished mid-upload after bytes reached the caller: cut.
                    response = None
                    book.cut_tags.add(tag)
                if response is not None:
                    if response.status_code == 200:
                        assert response.content == expected, (tag, response.content[:100])
                    book.sync_outcomes[f"{response.status_code}"] += 1
            book.sync_waits.append(trio.current_time() - started)
        else:
            response = await client.post(SUBMIT, headers=JANE, json=call)
            assert response.status_code == 200, response.text
        book.done_one()


async def wait_until(running: Running, condition: Callable[[], bool], seconds: float) -> None:
    with trio.fail_after(seconds):
        await running.foundry.broker.wait_until(condition)


async def test_soak(modules: Modules, book: Book) -> None:
    running = modules.running
    broker = running.foundry.broker
    py_processes = {runtime: await modules.start(runtime) for runtime in PY_RUNTIMES}
    started = trio.current_time()
    stop = trio.Event()
    poller_ends: list[float] = []

    async def poller(runtime: str, index: int) -> None:
        await sim_poller(running, runtime, book, stop, index)
        poller_ends.append(trio.current_time())

    async def chaos() -> None:
        # A quarter in: kill a real module process mid-job; its successor's restart
        # notification re-queues what it held (py-0 is configured to re-queue).
        await book.reach(JOBS // 4)
        await wait_until(running, lambda: bool(broker.jobs.running_on("py-0", "")), 30)
        held = [job.job_id for job in broker.jobs.running_on("py-0", "")]
        modules.kill(py_processes["py-0"])
        await py_processes["py-0"].wait()
        py_processes["py-0"] = await modules.start("py-0")
        await wait_until(
            running,
            lambda: all(
                JobEvent.RETURN in book.events[job_id] or job_id in book.terminal for job_id in held
            ),
            30,
        )
        # Half way: reset a simulated runtime's session (its running jobs fail).
        await book.reach(JOBS // 2)
        async with running.client() as client:
            reset = await client.post(RUNTIMES, json={"runtimeId": "sim-7"})
        assert reset.status_code == 200, reset.text

    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    with trio.fail_after(150):
        async with trio.open_nursery() as pollers:
            for runtime in SIM_RUNTIMES:
                for index in range(POLLERS_PER_SIM):
                    pollers.start_soon(poller, runtime, index)
            async with (
                running.client(limits=limits, timeout=EXECUTE_TIMEOUT + 10) as client,
                trio.open_nursery() as work,
            ):
                work.start_soon(chaos)
                send, receive = trio.open_memory_channel[int](0)
                async with receive:
                    for _ in range(SUBMITTERS):
                        work.start_soon(submitter, running, book, receive.clone(), client)
                async with send:
                    for tag in range(JOBS):
                        await send.send(tag)
            submitted_at = trio.current_time()
            # Every job ends (results, re-queues, the reset and the job timeout see to it).
            await wait_until(
                running,
                lambda: broker.jobs.counts()["queued"] + broker.jobs.counts()["running"] == 0,
                60,
            )
            all_done = trio.current_time()
            stop.set()
            stopped = trio.current_time()
        pollers_gone = max(poller_ends) - stopped

    # Exactly one terminal state per job, and one job per tag (but callers that left before
    # their request was read: they have none).
    tags = Counter(book.tag_of.values())
    assert set(tags.values()) == {1}
    left_early = set(range(JOBS)) - set(tags)
    assert left_early <= {tag for tag in range(JOBS) if tag % 40 == 0}, left_early
    assert set(book.terminal) == set(book.tag_of)
    assert set(book.terminal_count.values()) == {1}
    states = Counter(state.value for state, _ in book.terminal.values())
    assert states["succeeded"] > JOBS * 0.9, states
    # No job ran twice unless it was re-queued in between.
    for job_id, events in book.events.items():
        dispatches = [i for i, event in enumerate(events) if event is JobEvent.DISPATCH]
        for first, second in itertools.pairwise(dispatches):
            assert JobEvent.RETURN in events[first:second], (job_id, events)
    requeued = [job_id for job_id, events in book.events.items() if JobEvent.RETURN in events]
    # Succeeded results are byte-identical to what the runtime sent (the first complete upload).
    for job_id, (state, digest) in book.terminal.items():
        if state is not JobState.SUCCEEDED:
            continue
        tag = book.tag_of[job_id]
        if book.runtime_of[job_id] in PY_RUNTIMES:
            assert digest == sha(py_result(tag)), job_id
        else:
            assert digest == book.sent[job_id], job_id
    # Duplicates never replaced a result (they were refused).
    assert book.duplicate_statuses, "no duplicate was posted"
    assert set(book.duplicate_statuses) == {409}, book.duplicate_statuses
    # Only callers whose module vanished mid-upload were cut off.
    assert book.cut_tags <= book.vanished_tags, book.cut_tags - book.vanished_tags
    # Nobody waited past a timeout; no poller was left hanging.
    assert max(book.sync_waits) < EXECUTE_TIMEOUT + 5
    assert max(book.poll_waits) < POLL_TIMEOUT + 5
    assert pollers_gone < POLL_TIMEOUT + 5
    # After the retention, the job table is empty and keeps no result bytes.
    with trio.fail_after(RETENTION + 10):
        async with running.client() as client:
            while sum(
                (await client.get("/_emulate/state")).json()["services"]["foundry"]["jobs"].values()
            ):
                pass
    assert len(broker.jobs) == 0
    assert broker.jobs.retained_bytes == 0
    assert all(broker.waiting(runtime) == 0 for runtime in ALL_RUNTIMES)
    elapsed = all_done - started
    print(
        f"soak: {JOBS} jobs in {elapsed:.1f} s ({JOBS / elapsed:.0f}/s), submitted in "
        f"{submitted_at - started:.1f} s; states {dict(states)}; re-queued {len(requeued)}; "
        f"sync {dict(book.sync_outcomes)}; duplicates {dict(book.duplicate_statuses)}"
    )
