"""Fabric benchmarks (a script, not a test): run by hand, prints figures, asserts nothing.

    .venv/bin/python benchmarks/fabric_jobs.py jobs    [--clients 64] [--seconds 10]
    .venv/bin/python benchmarks/fabric_jobs.py fanout  [--subscribers 1000] [--rate 200]

`jobs`: N clients each submit a job through the Echo provider and follow its SSE stream to
`job.completed`, in a loop; prints jobs/s, p50/p99 latency and the ratio to the same run's
baseline (bare h11 on trio, requests/s with the same client count). Target (issue 13):
jobs/s >= 0.3 x baseline/3, p99 <= 2 x p50.

`fanout`: S subscribers on /v1/events/stream while jobs are submitted at R per second; prints
whether every subscriber got every event once and in order, the p99 delay from an event's
timestamp to its arrival, and the emulator's peak RSS. Target: p99 < 50 ms, memory bounded.

The emulator and the baseline run in their own processes (benchmarks/procs.py). Keep runs
short on shared machines.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.procs import ServerProcess  # noqa: E402

PRINCIPAL = {"X-Principal-Id": "0b0b0b0b-0000-4000-8000-000000000001"}
JOB = {"modality": "text", "input": {"prompt": "benchmark this prompt"}}
SEED = "fabric:\n  events:\n    subscriber_buffer: 4096\n"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_emulator(state: Path) -> ServerProcess:
    seed = state / "seed.yaml"
    seed.write_text(SEED)
    argv = [
        sys.executable,
        "-m",
        "emulator",
        "serve",
        "--seed",
        str(seed),
        "--services",
        "fabric",
        "--port",
        "fabric=0",
        "--tls-port",
        "fabric=0",
        "--state-dir",
        str(state),
    ]
    return ServerProcess(argv, name="emulator")


async def baseline_rps(clients: int, seconds: float) -> float:
    server = ServerProcess(
        [sys.executable, str(REPO / "benchmarks" / "baseline_h11.py")], name="baseline"
    )
    try:
        count = 0
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def worker(deadline: float) -> None:
                nonlocal count
                while trio.current_time() < deadline:
                    await client.get("/")
                    count += 1

            deadline = trio.current_time() + seconds
            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(worker, deadline)
        return count / seconds
    finally:
        server.stop()


async def one_job(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    submitted = await client.post("/v1/jobs", json=JOB, headers=PRINCIPAL)
    job_id = submitted.json()["data"]["id"]
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=PRINCIPAL) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: ") and '"job_completed"' in line:
                break
    return time.perf_counter() - started


async def bench_jobs(clients: int, seconds: float) -> None:
    baseline = await baseline_rps(clients, min(seconds, 5.0))
    with tempfile.TemporaryDirectory() as state:
        server = start_emulator(Path(state))
        try:
            latencies: list[float] = []
            limits = httpx.Limits(max_connections=clients * 2)
            async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:

                async def worker(deadline: float) -> None:
                    while trio.current_time() < deadline:
                        latencies.append(await one_job(client))

                deadline = trio.current_time() + seconds
                async with trio.open_nursery() as nursery:
                    for _ in range(clients):
                        nursery.start_soon(worker, deadline)
        finally:
            server.stop()
    rate = len(latencies) / seconds
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    target = 0.3 * baseline / 3
    print(f"baseline:       {baseline:,.0f} req/s ({clients} clients)")
    print(
        f"jobs:           {rate:,.1f} jobs/s  (target >= {target:,.1f}: "
        f"{'met' if rate >= target else 'NOT met'})"
    )
    print(
        f"latency:        p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms  "
        f"(p99/p50 = {p99 / p50:.2f}, target <= 2)"
    )


async def bench_fanout(subscribers: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as state:
        server = start_emulator(Path(state))
        try:
            seen: list[list[int]] = [[] for _ in range(subscribers)]
            delays: list[float] = []
            ready = trio.Semaphore(0)
            limits = httpx.Limits(max_connections=subscribers + 64)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:

                async def subscriber(index: int) -> None:
                    path = "/v1/events/stream"
                    async with client.stream("GET", path, headers=PRINCIPAL) as stream:
                        ready.release()
                        async for line in stream.aiter_lines():
                            if line.startswith("data: "):
                                event = json.loads(line[6:])
                                seen[index].append(event["sequence"])
                                stamp = datetime.datetime.fromisoformat(
                                    event["timestamp"].replace("Z", "+00:00")
                                ).timestamp()
                                delays.append(time.time() - stamp)

                async with trio.open_nursery() as nursery:
                    for index in range(subscribers):
                        nursery.start_soon(subscriber, index)
                    for _ in range(subscribers):
                        await ready.acquire()
                    server.reset_peak_rss()
                    interval = 1.0 / rate
                    deadline = trio.current_time() + seconds
                    async with trio.open_nursery() as producers:
                        while trio.current_time() < deadline:
                            producers.start_soon(
                                lambda: client.post("/v1/jobs", json=JOB, headers=PRINCIPAL)
                            )
                            await trio.sleep(interval)  # the producer's pace, not a wait
                    await trio.sleep(1.0)  # let the last events arrive before stopping
                    nursery.cancel_scope.cancel()
            peak = server.peak_rss()
        finally:
            server.stop()
    complete = all(s == seen[0] for s in seen) and seen[0] == sorted(set(seen[0]))
    print(
        f"subscribers:    {subscribers}, events each: {len(seen[0])}, "
        f"all identical, once and in order: {complete}"
    )
    print(
        f"delay:          p50 {quantile(delays, 0.5) * 1000:.1f} ms, "
        f"p99 {quantile(delays, 0.99) * 1000:.1f} ms (target < 50)"
    )
    print(f"emulator RSS:   peak {peak / 1024 / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["jobs", "fanout"])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args: Any = parser.parse_args()
    if args.what == "jobs":
        trio.run(bench_jobs, args.clients, args.seconds)
    else:
        trio.run(bench_fanout, args.subscribers, args.rate, args.seconds)


if __name__ == "__main__":
    main()
