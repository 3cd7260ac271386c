"""Scenarios 1, 2, 3 and 7 and the calibration run: throughput under closed-loop load.

Owns the calibration against the bare h11 server, the sync execute loop over HTTP/1.1 and h2c,
the async submit/status/result flow and the plain token and getCurrent routes, each returning
`Figures`; and `external_target` for `--target`. Imports trio and the benchmark's own modules.
"""

from __future__ import annotations

import json
import math

import trio

from benchmarks.common import Context, merge_errors
from benchmarks.h1 import Response, encode_request
from benchmarks.h2client import H2Connection
from benchmarks.jobplane import (
    GET_CURRENT,
    TOKEN,
    H1Session,
    H2Session,
    RuntimeRef,
    Target,
    async_caller,
    echo_runtime,
    sync_caller,
)
from benchmarks.loadgen import (
    Figures,
    Recorder,
    closed_loop,
    expect_status,
    figures,
    measure_window,
)
from benchmarks.procs import ProcessStats, baseline_server

# --- calibration ------------------------------------------------------------------------------


async def calibration(ctx: Context, concurrency: int = 64) -> Figures:
    server = await trio.to_thread.run_sync(baseline_server)
    try:
        request = encode_request("GET", "/ping", f"{server.host}:{server.port}")
        return await closed_loop(
            f"baseline: bare h11 on trio, c={concurrency}",
            server,
            server.host,
            server.port,
            request,
            expect_status(200),
            concurrency=concurrency,
            warmup=ctx.sizes.warmup,
            duration=ctx.sizes.duration,
            op_timeout=ctx.sizes.op_timeout,
        )
    finally:
        await trio.to_thread.run_sync(server.stop)


# --- scenarios 1 and 2: sync execute loop -----------------------------------------------------


async def sync_loop(ctx: Context, runtimes: int, callers: int, *, http2: bool) -> Figures:
    protocol = "h2c" if http2 else "HTTP/1.1"
    number = 2 if http2 else 1
    name = f"{number}. sync execute {protocol} R={runtimes} C={callers}"
    ctx.log(f"  {name}")
    async with ctx.fresh() as target:
        recorder = Recorder()
        runtime_errors = Recorder()
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            runtime_sessions, caller_sessions = await _sessions(
                nursery, target, runtimes, callers, http2
            )
            runtime_scope = trio.CancelScope()

            async def run_runtimes() -> None:
                with runtime_scope:
                    async with trio.open_nursery() as inner:
                        for index in range(runtimes):
                            inner.start_soon(
                                echo_runtime,
                                runtime_sessions[index],
                                target.runtime(index),
                                runtime_errors,
                            )

            nursery.start_soon(run_runtimes)
            async with trio.open_nursery() as caller_nursery:
                for index in range(callers):
                    caller_nursery.start_soon(
                        sync_caller,
                        caller_sessions[index],
                        target,
                        target.runtime(index % runtimes),
                        index,
                        recorder,
                        stop,
                        ctx.sizes.op_timeout,
                    )
                window = await measure_window(
                    [recorder], target.server, ctx.sizes.warmup, ctx.sizes.duration
                )
                stop.set()
            nursery.cancel_scope.cancel()
        for session in (*runtime_sessions, *caller_sessions):
            session.close()
        result = figures(name, recorder, window, target.server, unit="jobs/s")
        merge_errors(result, runtime_errors)
        result.extra.update({"R": runtimes, "C": callers, "protocol": protocol})
        if result.ops:
            result.extra["server requests/s"] = round(3 * result.throughput)
        return result


async def _sessions(
    nursery: trio.Nursery, target: Target, runtimes: int, callers: int, http2: bool
) -> tuple[list[H1Session] | list[H2Session], list[H1Session] | list[H2Session]]:
    if not http2:
        return (
            [H1Session(target.host, target.port) for _ in range(runtimes)],
            [H1Session(target.host, target.port) for _ in range(callers)],
        )
    # Runtimes share one connection per 16, callers one per 64: a few multiplexed connections.
    runtime_conns = [
        await H2Connection.open(nursery, target.host, target.port)
        for _ in range(max(1, math.ceil(runtimes / 16)))
    ]
    caller_conns = [
        await H2Connection.open(nursery, target.host, target.port)
        for _ in range(max(1, math.ceil(callers / 64)))
    ]
    return (
        [H2Session(runtime_conns[i % len(runtime_conns)]) for i in range(runtimes)],
        [H2Session(caller_conns[i % len(caller_conns)]) for i in range(callers)],
    )


# --- scenario 3: async flow -------------------------------------------------------------------


async def async_flow(ctx: Context, runtimes: int, callers: int) -> Figures:
    name = f"3. async submit/status/result HTTP/1.1 R={runtimes} C={callers}"
    ctx.log(f"  {name}")
    async with ctx.fresh() as target:
        recorder = Recorder()
        runtime_errors = Recorder()
        stop = trio.Event()
        status_polls = [0]
        sessions = [H1Session(target.host, target.port) for _ in range(runtimes + callers)]
        async with trio.open_nursery() as nursery:
            for index in range(runtimes):
                nursery.start_soon(
                    echo_runtime, sessions[index], target.runtime(index), runtime_errors
                )
            async with trio.open_nursery() as caller_nursery:
                for index in range(callers):
                    caller_nursery.start_soon(
                        async_caller,
                        sessions[runtimes + index],
                        target,
                        target.runtime(index % runtimes),
                        index,
                        recorder,
                        stop,
                        ctx.sizes.op_timeout,
                        status_polls,
                    )
                window = await measure_window(
                    [recorder], target.server, ctx.sizes.warmup, ctx.sizes.duration
                )
                stop.set()
            nursery.cancel_scope.cancel()
        for session in sessions:
            session.close()
        result = figures(name, recorder, window, target.server, unit="flows/s")
        merge_errors(result, runtime_errors)
        result.extra.update({"R": runtimes, "C": callers, "status polls (all)": status_polls[0]})
        if recorder.total:
            polls_per_flow = status_polls[0] / recorder.total
            result.extra["status polls per flow"] = round(polls_per_flow, 2)
            # submit + status polls + result/v2, plus the runtime's poll and result upload
            requests = 4 + polls_per_flow
            result.extra["requests per flow"] = round(requests, 2)
            if not math.isnan(result.server_cpu_ms_per_op):
                result.extra["emulator CPU ms per request"] = round(
                    result.server_cpu_ms_per_op / requests, 3
                )
        return result


# --- scenario 7: plain routes -----------------------------------------------------------------


async def plain_routes(ctx: Context) -> list[Figures]:
    results = []
    concurrency = ctx.sizes.plain_concurrency
    async with ctx.fresh() as target:
        form = (
            f"grant_type=client_credentials&client_id={target.client_id}"
            f"&client_secret={target.client_secret}&scope=api%3Aadmin-read"
        ).encode()
        token_request = encode_request(
            "POST",
            TOKEN,
            target.authority,
            [("Content-Type", "application/x-www-form-urlencoded")],
            form,
        )

        def token_check(response: Response) -> str | None:
            status, body = response.status, response.body
            if status != 200:
                return f"token answered {status}: {body[:200]!r}"
            if not isinstance(json.loads(body).get("access_token"), str):
                return f"token answer has no access_token: {body[:200]!r}"
            return None

        name = f"7. token (client credentials) c={concurrency}"
        ctx.log(f"  {name}")
        results.append(
            await closed_loop(
                name,
                target.server,
                target.host,
                target.port,
                token_request,
                token_check,
                concurrency=concurrency,
                warmup=ctx.sizes.warmup,
                duration=ctx.sizes.duration,
                op_timeout=ctx.sizes.op_timeout,
            )
        )
    async with ctx.fresh() as target:
        current_request = encode_request(
            "GET", GET_CURRENT, target.authority, [("Authorization", f"Bearer {target.bearer}")]
        )
        username = target.username.encode()

        def current_check(response: Response) -> str | None:
            status, body = response.status, response.body
            if status != 200 or username not in body:
                return f"getCurrent answered {status}: {body[:200]!r}"
            return None

        name = f"7. getCurrent c={concurrency}"
        ctx.log(f"  {name}")
        results.append(
            await closed_loop(
                name,
                target.server,
                target.host,
                target.port,
                current_request,
                current_check,
                concurrency=concurrency,
                warmup=ctx.sizes.warmup,
                duration=ctx.sizes.duration,
                op_timeout=ctx.sizes.op_timeout,
            )
        )
    return results


def external_target(
    url: str,
    token: str,
    runtime_id: str,
    runtime_token: str,
    deployed_app: str,
    pid: int | None = None,
) -> Target:
    """Another emulator already listening at `url` (plain HTTP); with `pid`, its CPU and memory
    are read from /proc like the local emulator's."""
    if not url.startswith("http://"):
        raise ValueError(f"--target must be a plain http:// URL, got {url!r}")
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "80")
    return Target(
        host=host or "127.0.0.1",
        port=int(port),
        bearer=token,
        runtimes=[RuntimeRef(runtime_id, runtime_token, deployed_app)],
        server=ProcessStats(pid) if pid else None,
    )
