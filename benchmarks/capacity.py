"""Scenarios 4 and 6: many callers waiting at once, and many runtimes polling with no work.

Owns the in-flight capacity run (10,000 sync executes held by a runtime that withholds results,
then released) and the idle run (2,000 parked long-polls, the cost of the re-poll wave, and a
liveness check of every poll). Imports trio and the benchmark's own modules.
"""

from __future__ import annotations

import math
import time
from functools import partial

import trio

from benchmarks.common import Context, merge_errors
from benchmarks.h1 import H1Connection, encode_request
from benchmarks.jobplane import (
    EXECUTE,
    FAILURES,
    BenchError,
    H1Session,
    RuntimeRef,
    bearer_headers,
    create_runtime,
    echo_body,
    echo_runtime,
    execute_body,
    parse_job,
)
from benchmarks.loadgen import Figures, Recorder, figures, measure_window
from benchmarks.procs import ProcessStats, self_cpu_seconds

MiB = 1024 * 1024
KiB = 1024

# --- scenario 4: in-flight capacity -----------------------------------------------------------


async def in_flight(ctx: Context) -> Figures:
    count = ctx.sizes.waiting
    name = f"4. {count:,} sync executes waiting, then released"
    ctx.log(f"  {name}")
    pollers = 32
    async with ctx.fresh() as target:
        server = target.server
        ref = target.runtime(0)
        errors = Recorder()
        rss_start = server.rss() if server else 0
        connections: list[H1Connection] = []
        limiter = trio.CapacityLimiter(128)
        with trio.fail_after(ctx.sizes.op_timeout * 4):

            async def connect() -> None:
                async with limiter:
                    connections.append(await H1Connection.open(target.host, target.port))

            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(connect)
        rss_connected = server.rss() if server else 0

        taken: list[tuple[str, str]] = []
        all_taken = trio.Event()
        release = trio.Event()
        released_at = [0.0]
        answers: list[float] = []
        headers = bearer_headers(target)

        async def poller() -> None:
            session = H1Session(target.host, target.port)
            auth = [("Module-Auth-Token", ref.token)]
            try:
                while len(taken) < count:
                    status, body = await session("GET", ref.job_path(), auth, None)
                    if status == 204:
                        continue
                    if status != 200:
                        raise BenchError(f"poll answered {status}: {body[:200]!r}")
                    taken.append(parse_job(body))
                    if len(taken) == count:
                        all_taken.set()
            finally:
                session.close()

        async def caller(index: int, connection: H1Connection) -> None:
            tag = f"w{index:06d}"
            try:
                await connection.send(
                    encode_request(
                        "POST",
                        EXECUTE,
                        target.authority,
                        headers,
                        execute_body(ref.deployed_app, tag),
                    )
                )
                response = await connection.read_response()
                answers.append(time.perf_counter())
                if response.status != 200:
                    raise BenchError(f"execute answered {response.status}: {response.body[:200]!r}")
                if response.body != echo_body(tag):
                    raise BenchError(f"{tag} got someone else's answer: {response.body[:120]!r}")
            except FAILURES as error:
                errors.error(f"waiting caller {index}: {type(error).__name__}: {error}")

        async def poster(share: list[tuple[str, str]]) -> None:
            session = H1Session(target.host, target.port)
            headers = [
                ("Module-Auth-Token", ref.token),
                ("Content-Type", "application/octet-stream"),
            ]
            await session("GET", "/_emulate/health", [], None)  # connected before the clock starts
            await release.wait()
            for job_id, tag in share:
                status, body = await session(
                    "POST", ref.result_path(job_id), headers, echo_body(tag)
                )
                if status != 204:
                    errors.error(f"result upload answered {status}: {body[:200]!r}")
            session.close()

        window_cpu = client_cpu = 0.0
        cpu0 = self0 = math.nan
        rss_waiting = 0
        release_seconds = math.nan
        try:
            with trio.fail_after(ctx.sizes.op_timeout * 4):
                async with trio.open_nursery() as nursery:
                    for index, connection in enumerate(connections):
                        nursery.start_soon(caller, index, connection)
                    async with trio.open_nursery() as polling:
                        for _ in range(pollers):
                            polling.start_soon(poller)
                        await all_taken.wait()
                        polling.cancel_scope.cancel()
                    rss_waiting = server.rss() if server else 0
                    shares = [taken[i::pollers] for i in range(pollers)]
                    async with trio.open_nursery() as posting:
                        for share in shares:
                            posting.start_soon(poster, share)
                        await trio.sleep(0.2)  # let the posters connect
                        cpu0 = server.cpu_seconds() if server else math.nan
                        self0 = self_cpu_seconds()
                        released_at[0] = time.perf_counter()
                        release.set()
        except trio.TooSlowError:
            errors.error(
                f"timed out: {len(taken)} of {count} jobs reached the runtime, "
                f"{len(answers)} callers answered"
            )
        finally:
            for connection in connections:
                connection.close()
        if answers and released_at[0]:
            release_seconds = max(answers) - released_at[0]
            window_cpu = (server.cpu_seconds() - cpu0) if server else math.nan
            client_cpu = self_cpu_seconds() - self0
        recorder = Recorder()
        recorder.measuring = True
        for moment in answers:
            recorder.done(released_at[0], moment)
        result = figures(name, recorder, None, server, unit="released/s")
        merge_errors(result, errors)
        if len(answers) != count:
            result.errors += 1
            result.error_samples.append(f"only {len(answers)} of {count} callers were answered")
        result.throughput = count / release_seconds if release_seconds > 0 else math.nan
        if server:
            result.server_cpu_ms_per_op = 1000 * window_cpu / count
            result.server_cpu_percent = 100 * window_cpu / release_seconds
        result.client_cpu_percent = 100 * client_cpu / release_seconds
        result.extra.update(
            {
                "waiting": count,
                "release seconds": round(release_seconds, 3),
                "latency is": "from release to answer",
                "RSS start MiB": round(rss_start / MiB, 1),
                "RSS connected MiB": round(rss_connected / MiB, 1),
                "RSS waiting MiB": round(rss_waiting / MiB, 1),
                "KiB per idle connection": round((rss_connected - rss_start) / KiB / count, 1),
                "KiB per waiting execute (beyond its connection)": round(
                    (rss_waiting - rss_connected) / KiB / count, 1
                ),
                "KiB per waiting caller (connection + execute)": round(
                    (rss_waiting - rss_start) / KiB / count, 1
                ),
            }
        )
        return result


# --- scenario 6: idle long-polls --------------------------------------------------------------


async def idle(ctx: Context) -> Figures:
    count = ctx.sizes.idle_runtimes
    name = f"6. {count:,} idle runtimes long-polling for {ctx.sizes.idle_seconds:g} s"
    ctx.log(f"  {name}")
    async with ctx.fresh() as target:
        server = target.server
        errors = Recorder()
        refs: list[RuntimeRef] = []
        creators = [H1Session(target.host, target.port) for _ in range(8)]

        async def create(share: range, session: H1Session) -> None:
            for index in share:
                refs.append(
                    await create_runtime(
                        session,
                        f"idle-{index:05d}",
                        f"ri.foundry.main.deployed-app.idle-{index:05d}",
                    )
                )

        with trio.fail_after(ctx.sizes.op_timeout * 4):
            async with trio.open_nursery() as nursery:
                for offset, session in enumerate(creators):
                    nursery.start_soon(create, range(offset, count, len(creators)), session)
        for session in creators:
            session.close()
        polls = [0]
        jobs = [0]
        sessions = [H1Session(target.host, target.port) for _ in refs]
        first_poll = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for session, ref in zip(sessions, refs, strict=True):
                nursery.start_soon(
                    partial(echo_runtime, session, ref, errors, polls=polls, jobs=jobs)
                )
            await _settled(server, len(sessions))
            if server:
                server.reset_peak_rss()
            polls_before, jobs_before = polls[0], jobs[0]
            window = await measure_window([], server, 0.0, ctx.sizes.idle_seconds)
            repolls = polls[0] - polls_before
            if jobs[0] != jobs_before:
                errors.error("an idle runtime received a job nobody submitted")
            wave = await _repoll_wave(server, polls, polls_before, first_poll, ctx)
            # Liveness: every parked poll must still take work.
            recorder = Recorder()
            recorder.measuring = True
            headers = bearer_headers(target)

            async def check(share: list[RuntimeRef], worker: int) -> None:
                session = H1Session(target.host, target.port)
                for ref in share:
                    tag = f"i-{ref.runtime_id}"
                    try:
                        with trio.fail_after(ctx.sizes.op_timeout):
                            started = time.perf_counter()
                            status, body = await session(
                                "POST", EXECUTE, headers, execute_body(ref.deployed_app, tag)
                            )
                            finished = time.perf_counter()
                        if status != 200 or body != echo_body(tag):
                            raise BenchError(f"execute answered {status}: {body[:120]!r}")
                        recorder.done(started, finished)
                    except FAILURES as error:
                        errors.error(f"liveness {ref.runtime_id}: {type(error).__name__}: {error}")
                session.close()

            async with trio.open_nursery() as checking:
                for worker in range(64):
                    checking.start_soon(check, refs[worker::64], worker)
            nursery.cancel_scope.cancel()
        for session in sessions:
            session.close()
        result = figures(name, recorder, None, server, unit="jobs/s")
        result.ops = len(recorder.latencies)
        result.throughput = math.nan
        result.server_cpu_percent = 100 * window.server_cpu / window.seconds
        result.client_cpu_percent = 100 * window.client_cpu / window.seconds
        result.extra.update(
            {
                "runtimes": count,
                "re-polls during the idle window": repolls,
                "emulator CPU % in the idle window": round(result.server_cpu_percent, 3),
                "emulator CPU seconds in the idle window": round(window.server_cpu, 3),
                "latency is": "liveness executes after the idle window",
                **wave,
            }
        )
        merge_errors(result, errors)
        if len(recorder.latencies) != count:
            result.errors += 1
            result.error_samples.append(f"only {len(recorder.latencies)} of {count} answered")
        return result


async def _repoll_wave(
    server: ProcessStats | None, polls: list[int], before: int, first_poll: float, ctx: Context
) -> dict[str, float]:
    """Wait for the poll timeout to end every parked poll (204) and each runtime to poll again,
    and measure what that wave costs: the idle window above sits between two such waves.
    Full runs only (the wave comes after the emulator's poll timeout, 20 s in the seed)."""
    if server is None or ctx.sizes.idle_seconds < 5:
        return {}
    cpu0 = server.cpu_seconds()
    target = before + ctx.sizes.idle_runtimes
    started = None
    with trio.move_on_after(60):
        while polls[0] < target:
            if started is None and polls[0] > before:
                started = time.perf_counter()
            await trio.sleep(0.05)
    if polls[0] < target or started is None:
        return {"re-poll wave": math.nan}
    await trio.sleep(0.5)  # the last re-polls being parked
    cpu = server.cpu_seconds() - cpu0
    period = started - first_poll
    return {
        "re-poll wave after s": round(period, 1),
        "emulator CPU s for the wave": round(cpu, 3),
        "emulator CPU ms per re-poll": round(1000 * cpu / ctx.sizes.idle_runtimes, 3),
        "steady-state CPU % (one wave per poll timeout)": round(100 * cpu / period, 2),
    }


async def _settled(server: ProcessStats | None, connections: int) -> None:
    """Wait until the emulator has taken in every poll: its CPU use falls below 3 % of a core
    for half a second (at most 60 s). Without a local process, wait a fixed 2 s."""
    if server is None:
        await trio.sleep(2.0)
        return
    await trio.sleep(0.5 + connections / 5000)
    with trio.move_on_after(60):
        while True:
            before = server.cpu_seconds()
            await trio.sleep(0.5)
            if server.cpu_seconds() - before < 0.015:
                return
