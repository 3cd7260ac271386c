"""The reliability soak of the compute-module job plane (issue 8): 20,000 jobs, mixed sync and
async, through 8 runtimes — 2 served by the real Python compute-module library as subprocesses
over HTTPS (a share of the jobs), 6 by simulated pollers here (the bulk) — while the test kills a
module process mid-job, disconnects synchronous callers while they wait, has simulated modules
vanish mid-upload (cutting callers mid-stream), resets a runtime and posts duplicate results.

Invariants checked at the end:
- every job the emulator accepted reached exactly one terminal state, and one job per submission;
- no job was dispatched twice unless it was re-queued in between (only the killed module's, whose
  runtime re-queues), no simulated poller received a job another had, and a re-queued job's result
  is the second run's (the Python module's answer names the process generation that computed it);
- every succeeded result is byte-identical (SHA-256) to what its runtime sent first, what every
  synchronous caller received agrees with its job's outcome, and duplicates never replaced one;
- no caller waited past its execute timeout, no poll outlived its poll timeout, every poller
  stopped promptly and the emulator holds no poll open once the modules are gone;
- once the retention has passed, the job table is empty, keeps no result bytes, no job, result
  pipe or upload object is alive any more, and the process's RSS is back near where it started.

The emulator runs in this process, so its job table is observed exactly (`JobTable.submit` and
`JobTable.transition` are wrapped, test-only) and the chaos is timed by it. The simulated pollers
and the callers run in a child process (`soakload.py`, on lean raw-socket HTTP/1.1 clients: httpx
would cost more CPU per request than the emulator), so they get the other core; it reports back
every byte it sent and received, which is checked against the job table. SOAK_JOBS sets the
number of jobs (default 20,000).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import json
import math
import os
import resource
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from emulatorrun import Running, StartEmulator
from soakload import (
    ALL_RUNTIMES,
    JOBS_DEFAULT,
    MODULE,
    PY_RUNTIMES,
    RUNTIMES,
    SIM_RUNTIMES,
    Connection,
    Target,
    Wire,
    app,
    make_plans,
    module_auth,
    py_result,
    request,
    sha,
)

from emulator.foundry import results as results_module
from emulator.foundry.core import jobs as jobs_module
from emulator.foundry.core.jobs import FailureKind, Job, JobEvent, JobState
from emulator.web.rawasgi import RawRequest

# The load generator runs in its own process (tests/soakload.py).
SOAKLOAD = Path(__file__).resolve().parents[1] / "soakload.py"
JOBS = int(os.environ.get("SOAK_JOBS", str(JOBS_DEFAULT)))
POLL_TIMEOUT = 1.0
EXECUTE_TIMEOUT = 20.0
RETENTION = 1.0
# Slack on top of a timeout before a wait counts as "past it" (the CPUs are shared).
SLACK = 5.0
# Tombstones of forgotten jobs are kept up to this many (bounded by design).
MAX_RETAINED = 5000
# RSS may end at most this far above where it started, beyond the test's own records (see the
# memory check at the end; measured: about 10 MiB after 20,000 jobs).
RSS_GROWTH_LIMIT = 24 * 1024 * 1024


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
                "max_retained_jobs": MAX_RETAINED,
            },
        },
    },
}

PLANS = make_plans(JOBS)


@attrs.define
class Book:
    """The job table as the emulator changed it (every submission and transition, in order)."""

    tag_of: dict[str, int] = attrs.field(factory=dict)
    submissions: Counter[int] = attrs.field(factory=Counter)
    events: dict[str, list[JobEvent]] = attrs.field(factory=lambda: defaultdict(list))
    # Sequence number of each job's last dispatch (every submission and transition counts one).
    last_dispatch: dict[str, int] = attrs.field(factory=dict)
    terminal: dict[str, tuple[JobState, str | None, FailureKind | None]] = attrs.field(factory=dict)
    terminal_count: Counter[str] = attrs.field(factory=Counter)
    running_py0: set[str] = attrs.field(factory=set)
    sequence: int = 0
    _changed: trio.Event | None = None

    def submitted(self, job: Job) -> None:
        self.sequence += 1
        tag = int(job.query["i"])
        self.tag_of[job.job_id] = tag
        self.submissions[tag] += 1
        self._notify()

    def record(self, job: Job, event: JobEvent) -> None:
        self.sequence += 1
        job_id = job.job_id
        self.events[job_id].append(event)
        if event is JobEvent.DISPATCH:
            self.last_dispatch[job_id] = self.sequence
            if job.runtime_id == "py-0":
                self.running_py0.add(job_id)
        elif event is JobEvent.RETURN:
            self.running_py0.discard(job_id)
        if job.state.finished:
            self.running_py0.discard(job_id)
            self.terminal_count[job_id] += 1
            body = job.result.body() if job.result is not None else None
            digest = sha(body) if body is not None and job.state is JobState.SUCCEEDED else None
            kind = job.failure.kind if job.failure is not None else None
            self.terminal[job_id] = (job.state, digest, kind)
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def until(self, condition: Callable[[], bool], seconds: float) -> None:
        """Wait (at most `seconds`) until `condition()` holds; checked at every change."""
        with trio.fail_after(seconds):
            while not condition():
                if self._changed is None:
                    self._changed = trio.Event()
                await self._changed.wait()

    def outstanding(self) -> int:
        return len(self.tag_of) - len(self.terminal)


@pytest.fixture
def book(monkeypatch: pytest.MonkeyPatch) -> Book:
    book = Book()
    submit = jobs_module.JobTable.submit
    transition = jobs_module.JobTable.transition

    def observed_submit(self: jobs_module.JobTable, **kwargs: Any) -> Job:
        job = submit(self, **kwargs)
        book.submitted(job)
        return job

    def observed_transition(
        self: jobs_module.JobTable, job: Job, event: JobEvent, now: float, **kwargs: Any
    ) -> list[str]:
        forgotten = transition(self, job, event, now, **kwargs)
        book.record(job, event)
        return forgotten

    monkeypatch.setattr(jobs_module.JobTable, "submit", observed_submit)
    monkeypatch.setattr(jobs_module.JobTable, "transition", observed_transition)
    return book


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """This process's resident set, once glibc has handed its free heap pages back (so the
    figure is what is in use, not what malloc keeps for later)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


@attrs.define
class Modules:
    """Real Python compute-module processes, one at a time per runtime."""

    running: Running
    tmp_path: Path
    sessions: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    processes: list[trio.Process] = attrs.field(factory=list)

    async def start(self, runtime: str, generation: str) -> trio.Process:
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
            MODULE_AUTH_TOKEN=str(self.tmp_path / f"token-{runtime}"),
            MAX_CONCURRENT_TASKS="4",
            SOAK_GENERATION=generation,
        )
        script = self.tmp_path / "module.py"
        script.write_text(MODULE)
        with (self.tmp_path / f"module-{runtime}-{generation}.log").open("wb") as log:
            process = await trio.lowlevel.open_process(
                [sys.executable, str(script)],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    async def kill(self, process: trio.Process) -> None:
        """SIGKILL the module's whole process group (its worker pool too) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with trio.fail_after(10):
            await process.wait()


@pytest.fixture
async def modules(start_emulator: StartEmulator, tmp_path: Path) -> AsyncIterator[Modules]:
    running = await start_emulator(SEED)
    modules = Modules(running, tmp_path)
    yield modules
    for process in modules.processes:
        await modules.kill(process)


class Lines:
    """Lines of text from a process's output stream (its log is quoted if it ends early)."""

    def __init__(self, stream: trio.abc.ReceiveStream, log: Path) -> None:
        self.stream = stream
        self.log = log
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise EOFError(
                    f"the load generator ended early: {self.buffer[-500:]!r}\n"
                    + self.log.read_text(errors="replace")[-3000:]
                )
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


async def run_through_reset(running: Running, target: Target, runtime: str) -> dict[str, Any]:
    """Poll `runtime` for a job as its module would, reset the runtime while holding it, then
    post the job's result late."""
    auth = module_auth(runtime)
    base = f"{RUNTIMES}/{runtime}"
    connection = Connection(target.host, target.port)
    try:
        polled = await connection.send(request("GET", f"{base}/job", target.authority, auth))
        while polled.status == 204:
            polled = await connection.send(request("GET", f"{base}/job", target.authority, auth))
        assert polled.status == 200, polled.body
        job_id = polled.json()["computeModuleJobV1"]["jobId"]
        async with running.client() as client:
            reset = await client.post(RUNTIMES, json={"runtimeId": runtime})
        assert reset.status_code == 200, reset.text
        ended = reset.json()["endedJobs"]
        assert job_id in ended, (job_id, ended)
        late = await connection.send(
            request("POST", f"{base}/results/{job_id}", target.authority, auth, b"too late")
        )
        # Accepted and dropped: the job already failed.
        assert late.status == 204, late.body
    finally:
        connection.close()
    return {"reset_held": job_id, "reset_ended": ended}


def footprint(*roots: object) -> int:
    """Bytes held by the test's own records (containers and everything in them, once each)."""
    seen: set[int] = set()
    total = 0
    pending = list(roots)
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
    return total


def live_objects(*kinds: type) -> Counter[str]:
    gc.collect()
    return Counter(type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds))


async def test_soak(modules: Modules, book: Book, tmp_path: Path) -> None:
    running = modules.running
    broker = running.foundry.broker
    host, _, port = running.http_url.split("://", 1)[1].rstrip("/").rpartition(":")
    target = Target(host, int(port))
    py = {runtime: await modules.start(runtime, "1") for runtime in PY_RUNTIMES}
    gc.collect()
    rss_before = rss_bytes()
    chaos_log: dict[str, Any] = {}

    async def chaos() -> None:
        # A quarter in: kill a real module process (and its workers) while it holds jobs; its
        # successor's restart notification re-queues them (py-0 is configured to re-queue).
        await book.until(lambda: len(book.terminal) >= JOBS // 4, 120)
        await book.until(lambda: bool(book.running_py0), 30)
        held = set(book.running_py0)
        chaos_log["kill_sequence"] = book.sequence
        await modules.kill(py["py-0"])
        py["py-0"] = await modules.start("py-0", "2")
        await book.until(
            lambda: all(
                JobEvent.RETURN in book.events[job_id] or job_id in book.terminal for job_id in held
            ),
            30,
        )
        chaos_log["held"] = held
        # Half way: take a job of sim-7 as its module would, and reset the runtime's session
        # while that job runs; what sim-7 runs then fails, and the late result is dropped.
        await book.until(lambda: len(book.terminal) >= JOBS // 2, 120)
        with trio.fail_after(30):
            chaos_log.update(await run_through_reset(running, target, "sim-7"))

    with (tmp_path / "load.log").open("wb") as load_log:
        load = await trio.lowlevel.open_process(
            [sys.executable, str(SOAKLOAD), host, port, str(JOBS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=load_log,
        )
    assert load.stdin is not None
    assert load.stdout is not None
    lines = Lines(load.stdout, tmp_path / "load.log")
    with trio.fail_after(300):
        try:
            started = trio.current_time()
            cpu_before = cpu_seconds()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(chaos)
                assert await lines.next() == "submitted", (tmp_path / "load.log").read_text()
                submitted_at = trio.current_time()
                # Every job ends: results, re-queues, the reset and the timeouts see to it.
                await book.until(lambda: book.outstanding() == 0, 60)
                all_done = trio.current_time()
                cpu_used = cpu_seconds() - cpu_before
            await load.stdin.send_all(b"stop\n")
            wire = Wire.from_json(json.loads(await lines.next()))
            assert await load.wait() == 0, (tmp_path / "load.log").read_text()
        finally:
            with contextlib.suppress(ProcessLookupError):
                load.kill()
        for process in py.values():
            await modules.kill(process)
        # With every module and poller gone, the emulator holds no poll open.
        with trio.fail_after(POLL_TIMEOUT + SLACK):
            await broker.wait_until(
                lambda: all(broker.polling(runtime) == 0 for runtime in ALL_RUNTIMES)
            )
    assert not wire.problems, wire.problems[:20]
    counts = broker.jobs.counts()
    assert counts["queued"] == counts["running"] == 0, counts

    # Exactly one terminal state per job, and at most one job per submission (a caller that
    # left before its request was read has none; everyone else has exactly one).
    assert set(book.submissions.values()) == {1}
    unsubmitted = set(range(JOBS)) - set(book.submissions)
    assert unsubmitted <= {p.tag for p in PLANS if p.leave_after < math.inf}, unsubmitted
    assert set(book.terminal) == set(book.tag_of)
    assert set(book.terminal_count.values()) == {1}
    states = Counter(state.value for state, _, _ in book.terminal.values())
    assert states["succeeded"] > JOBS * 0.9, states
    job_of = {tag: job_id for job_id, tag in book.tag_of.items()}

    # No job ran twice unless it was re-queued in between; only the killed module's were.
    for job_id, events in book.events.items():
        dispatches = [i for i, event in enumerate(events) if event is JobEvent.DISPATCH]
        for first, second in itertools.pairwise(dispatches):
            assert JobEvent.RETURN in events[first:second], (job_id, events)
    requeued = {job_id for job_id, events in book.events.items() if JobEvent.RETURN in events}
    assert {PLANS[book.tag_of[job_id]].runtime for job_id in requeued} <= {"py-0"}, requeued
    assert set(wire.received.values()) <= {1}, "a simulated poller got a job another one had"
    held = chaos_log["held"]
    assert held, "the module was not killed while holding a job"

    # Succeeded results are byte-identical to what the runtime sent first; a Python module's
    # result comes from the generation that was alive at the job's last dispatch (so a
    # re-queued job's result is the successor's).
    kill_sequence = chaos_log["kill_sequence"]
    for job_id, (state, digest, _) in book.terminal.items():
        if state is not JobState.SUCCEEDED:
            continue
        plan = PLANS[book.tag_of[job_id]]
        if plan.runtime in SIM_RUNTIMES:
            assert digest == wire.sent[job_id], job_id
            continue
        generation = "1"
        if plan.runtime == "py-0" and book.last_dispatch[job_id] > kill_sequence:
            generation = "2"
        assert digest == sha(py_result(plan.tag, generation)), (job_id, plan, generation)
    for job_id in held:
        state, _, _ = book.terminal[job_id]
        if job_id in requeued:
            assert book.last_dispatch[job_id] > kill_sequence
            assert state is JobState.SUCCEEDED, (job_id, book.terminal[job_id])
    assert requeued & held or all(book.terminal[j][0] is JobState.SUCCEEDED for j in held)

    # What every synchronous caller got agrees with its job's outcome.
    for tag, (outcome, answered) in wire.sync_outcomes.items():
        plan = PLANS[tag]
        if outcome == "left":
            assert plan.leave_after < math.inf, tag
            continue
        state, _, kind = book.terminal[job_of[tag]]
        if outcome == 200:
            assert answered != "wrong", (tag, "got someone else's or a changed result")
            assert state is JobState.SUCCEEDED, (tag, state, kind)
            if plan.runtime == "py-0" and book.last_dispatch[job_of[tag]] > kill_sequence:
                assert answered == "2", tag
        elif outcome in ("cut", 502):
            # Only callers whose module vanished mid-upload, or whose job the reset failed
            # while its bytes were flowing, were cut off (or told so).
            reset = state is JobState.FAILED and kind is FailureKind.RUNTIME_RESET
            assert tag in wire.vanished or reset, (tag, outcome, state, kind)
        elif outcome == 500:
            assert state is JobState.FAILED, (tag, state)
        else:
            raise AssertionError(f"caller {tag} got {outcome} for a job that ended {state} {kind}")
    # The reset failed what sim-7 was running, and nothing else failed.
    failed = {job_id for job_id, (state, _, _) in book.terminal.items() if state is JobState.FAILED}
    assert failed == set(chaos_log["reset_ended"]), (failed, chaos_log["reset_ended"])
    assert all(book.terminal[j][2] is FailureKind.RUNTIME_RESET for j in failed)
    # Cancelled jobs are those of callers that left before a runtime took them.
    for job_id, (state, _, kind) in book.terminal.items():
        if state is JobState.CANCELLED:
            assert kind is FailureKind.CALLER_LEFT, (job_id, kind)
            assert PLANS[book.tag_of[job_id]].leave_after < math.inf
    # Every asynchronous submit's answer named the job the emulator queued for it.
    for tag, job_id in wire.async_ids.items():
        assert book.tag_of[job_id] == tag
    assert len(wire.async_ids) == sum(1 for p in PLANS if not p.sync)

    # Duplicates never replaced a result: refused once there is one.
    assert wire.duplicates, "no duplicate was posted"
    for job_id, status in wire.duplicates:
        if book.terminal[job_id][0] is JobState.SUCCEEDED:
            assert status == 409, (job_id, status)

    # Nobody waited past a timeout; no poller was left hanging.
    assert wire.longest_sync_wait < EXECUTE_TIMEOUT + SLACK
    assert wire.longest_poll < POLL_TIMEOUT + SLACK
    assert wire.pollers_stopped < POLL_TIMEOUT + SLACK

    # After the retention the job table is empty and keeps no result bytes...
    with trio.fail_after(RETENTION + 10):
        await broker.wait_until(lambda: len(broker.jobs) == 0)
    async with running.client() as client:
        state_now = (await client.get("/_emulate/state")).json()
    assert not any(state_now["services"]["foundry"]["jobs"].values()), state_now
    statistics = broker.statistics()
    assert statistics["retainedResultBytes"] == broker.jobs.retained_bytes == 0
    assert statistics["callersWaiting"] == statistics["pollsWaiting"] == 0
    assert all(broker.waiting(runtime) == 0 for runtime in ALL_RUNTIMES)
    # ...no job, result pipe, upload or request object is alive any more...
    alive = live_objects(Job, results_module.ResultPipe, results_module.ResultUpload, RawRequest)
    assert not alive, alive
    # ...and memory is back near where it started. The test's own records of every job (about
    # 18 MiB for 20,000) are counted and taken off. What may remain besides: the emulator's
    # bounded tombstones of forgotten job ids (MAX_RETAINED) and request log (1,000 entries),
    # the broker's deadline entries not yet due (each job's queue-timeout entry stays until
    # the queue timeout, 600 s, even after the job is forgotten: some 3 MiB here), and pymalloc
    # arenas kept partly used. A job leaked whole (record, query, result: over 1 KiB) per job
    # would add more than 20 MiB; the object census above catches that exactly.
    rss_after = rss_bytes()
    records = footprint(
        *(getattr(book, f.name) for f in attrs.fields(Book)),
        *(getattr(wire, f.name) for f in attrs.fields(Wire)),
        chaos_log,
        job_of,
    )
    growth = rss_after - rss_before - records
    elapsed = all_done - started
    print(
        f"\nsoak: {JOBS} jobs in {elapsed:.1f} s ({JOBS / elapsed:.0f} jobs/s), submitted in "
        f"{submitted_at - started:.1f} s; states {dict(states)}; re-queued {len(requeued)}; "
        f"sync {dict(Counter(o for o, _ in wire.sync_outcomes.values()))}; "
        f"vanished {len(wire.vanished)} (retried {wire.retried_uploads}); "
        f"duplicates {dict(Counter(s for _, s in wire.duplicates))}; "
        f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB (the test's records "
        f"{records / 2**20:.0f} MiB); CPU of this process "
        f"{cpu_used:.0f} s"
    )
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
