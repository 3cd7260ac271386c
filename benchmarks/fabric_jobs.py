"""Fabric benchmarks (a script, not a test): run by hand, prints figures, asserts nothing.

    .venv/bin/python benchmarks/fabric_jobs.py jobs    [--clients 64] [--seconds 10]
    .venv/bin/python benchmarks/fabric_jobs.py fanout  [--subscribers 1000] [--rate 200]

`jobs`: N clients each submit a job through the Echo provider and follow its SSE stream to
`job.completed`, in a loop; prints jobs/s, p50/p99 latency and the ratio to the same run's
baseline (bare h11 on trio, requests/s with the same client count). Target (issue 13):
jobs/s >= 0.3 x baseline/3, p99 <= 2 x p50.

`fanout`: S subscribers on /v1/events/stream while jobs are submitted at R per second; prints
whether the subscribers got every event once and in order, the p99 delay from an event's
timestamp to its arrival, and the emulator's peak RSS. Target: p99 < 50 ms, memory bounded.
By default every 10th subscriber is tallied event by event and the others' bytes are discarded
unread and counted (`fanout_reader.py`): tallying 820 MB/s takes the subscribers' process a
whole core, which then, not the emulator, sets the delays. `--no-drain` tallies them all.

The emulator and the baseline run in their own processes (benchmarks/procs.py). Keep runs
short on shared machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.h1 import H1Connection, encode_request  # noqa: E402
from benchmarks.procs import (  # noqa: E402
    ServerProcess,
    pin_load_generator,
    raise_fd_limit,
    self_cpu_seconds,
)
from benchmarks.sseclient import TIMESTAMP, parse_stamp  # noqa: E402

PRINCIPAL = {"X-Principal-Id": "0b0b0b0b-0000-4000-8000-000000000001"}
JOB = {"modality": "text", "input": {"prompt": "benchmark this prompt"}}
# `python -m emulator`; FABRIC_BENCH_PYTHON_ARGS="/path/to/wrapper.py" runs the emulator
# through a wrapper script instead (for instance one that logs garbage-collection pauses).
EMULATOR = [sys.executable, *(os.environ.get("FABRIC_BENCH_PYTHON_ARGS", "-m emulator").split())]
SEED = "fabric:\n  events:\n    subscriber_buffer: 4096\n"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_emulator(state: Path) -> ServerProcess:
    seed = state / "seed.yaml"
    seed.write_text(SEED)
    argv = [
        *EMULATOR,
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


async def baseline_rps(clients: int, seconds: float, raw: bool) -> tuple[float, float]:
    """Requests per second of the bare-h11 calibration server with the same client, and its
    CPU seconds per request."""
    server = ServerProcess(
        [sys.executable, str(REPO / "benchmarks" / "baseline_h11.py")], name="baseline"
    )
    cpu_before = server.cpu_seconds()
    try:
        count = 0
        deadline = trio.current_time() + seconds
        if raw:
            request = encode_request("GET", "/", f"{server.host}:{server.port}")

            async def raw_worker() -> None:
                nonlocal count
                conn = await H1Connection.open(server.host, server.port)
                try:
                    while trio.current_time() < deadline:
                        await conn.request(request)
                        count += 1
                finally:
                    conn.close()

            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(raw_worker)
            return count / seconds, (server.cpu_seconds() - cpu_before) / max(count, 1)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def worker() -> None:
                nonlocal count
                while trio.current_time() < deadline:
                    await client.get("/")
                    count += 1

            async with trio.open_nursery() as nursery:
                for _ in range(clients):
                    nursery.start_soon(worker)
        return count / seconds, (server.cpu_seconds() - cpu_before) / max(count, 1)
    finally:
        server.stop()


async def one_job(client: httpx.AsyncClient) -> tuple[float, float]:
    """(client latency, server time from job.created to job.completed), in seconds."""
    started = time.perf_counter()
    submitted = await client.post("/v1/jobs", json=JOB, headers=PRINCIPAL)
    job_id = submitted.json()["data"]["id"]
    stamps: list[bytes] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=PRINCIPAL) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                stamps.append(line.encode())
                if '"job_completed"' in line:
                    break
    return time.perf_counter() - started, _server_time(b"\n".join(stamps))


def _server_time(body: bytes) -> float:
    """job.completed's timestamp minus job.created's, from a job stream's bytes."""
    first = body.find(TIMESTAMP) + len(TIMESTAMP)
    last = body.rfind(TIMESTAMP) + len(TIMESTAMP)
    created = parse_stamp(body[first : body.find(b'"', first)])
    return parse_stamp(body[last : body.find(b'"', last)]) - created


class RawJobClient:
    """One keep-alive connection on raw sockets: submit, then follow the job's stream on the
    same connection to its end (the server ends it after job.completed)."""

    def __init__(self, conn: H1Connection, host: str) -> None:
        self.conn = conn
        self.host = host
        self.submit = encode_request(
            "POST",
            "/v1/jobs",
            host,
            [("Content-Type", "application/json"), *PRINCIPAL.items()],
            json.dumps(JOB).encode(),
        )

    async def one_job(self) -> tuple[float, float]:
        started = time.perf_counter()
        answer = await self.conn.request(self.submit)
        job_id = json.loads(answer.body)["data"]["id"]
        target = f"/v1/jobs/{job_id}/events"
        stream = await self.conn.request(
            encode_request("GET", target, self.host, PRINCIPAL.items())
        )
        if b"job_completed" not in stream.body:
            raise RuntimeError(
                f"the job stream ended without job.completed: {stream.body[-200:]!r}"
            )
        return time.perf_counter() - started, _server_time(stream.body)


async def bench_jobs(clients: int, seconds: float, raw: bool, profile: Path | None) -> None:
    print(f"pinning:        {pin_load_generator()}; client {'raw sockets' if raw else 'httpx'}")
    baseline, baseline_cpu = await baseline_rps(clients, min(seconds, 5.0), raw)
    with tempfile.TemporaryDirectory() as state:
        server = start_emulator(Path(state))
        try:
            results: list[tuple[float, float]] = []
            if profile is not None:
                server.start_profiler(profile)
            deadline = trio.current_time() + seconds
            cpu_before, load_before = server.cpu_seconds(), self_cpu_seconds()
            if raw:

                async def raw_worker() -> None:
                    conn = await H1Connection.open(server.host, server.port)
                    client = RawJobClient(conn, f"{server.host}:{server.port}")
                    try:
                        while trio.current_time() < deadline:
                            results.append(await client.one_job())
                    finally:
                        conn.close()

                async with trio.open_nursery() as nursery:
                    for _ in range(clients):
                        nursery.start_soon(raw_worker)
            else:
                limits = httpx.Limits(max_connections=clients * 2)
                async with httpx.AsyncClient(
                    base_url=server.url, timeout=30, limits=limits
                ) as client:

                    async def worker() -> None:
                        while trio.current_time() < deadline:
                            results.append(await one_job(client))

                    async with trio.open_nursery() as nursery:
                        for _ in range(clients):
                            nursery.start_soon(worker)
            cpu = server.cpu_seconds() - cpu_before
            load_cpu = self_cpu_seconds() - load_before
            peak = server.peak_rss()
            server.stop_profiler()
        finally:
            server.stop()
    latencies = [latency for latency, _ in results]
    inside = [server_time for _, server_time in results]
    rate = len(latencies) / seconds
    p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
    target = 0.3 * baseline / 3
    print(
        f"baseline:       {baseline:,.0f} req/s ({clients} clients), "
        f"{baseline_cpu * 1000:.3f} ms CPU per request"
    )
    print(
        f"jobs:           {rate:,.1f} jobs/s  (target >= {target:,.1f}: "
        f"{'met' if rate >= target else 'NOT met'})"
    )
    print(
        f"latency:        p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms  (p99/p50 = {p99 / p50:.2f}, target <= 2)"
    )
    print(
        f"server side:    job.created to job.completed p50 "
        f"{quantile(inside, 0.5) * 1000:.1f} ms, p99 {quantile(inside, 0.99) * 1000:.1f} ms"
    )
    per_job = cpu / max(len(latencies), 1)
    print(
        f"x baseline/3:   {rate / (baseline / 3):.2f} by throughput, "
        f"{baseline_cpu * 3 / per_job:.2f} by CPU per operation (target 0.3)"
    )
    print(
        f"CPU:            emulator {per_job * 1000:.2f} ms per job "
        f"({cpu / seconds:.0%} of a core), load generator {load_cpu / seconds:.0%}; "
        f"emulator peak RSS {peak / 2**20:.0f} MiB"
    )


async def _state(conn: H1Connection, host: str) -> dict[str, Any]:
    answer = await conn.request(encode_request("GET", "/_emulate/state", host))
    state: dict[str, Any] = json.loads(answer.body)
    return state


def _fabric_state(state: dict[str, Any]) -> dict[str, Any]:
    """The Fabric part of `/_emulate/state` (wherever the platform nests it)."""
    if "events" in state:
        return state
    for value in state.values():
        if isinstance(value, dict):
            found = _fabric_state(value)
            if found:
                return found
    return {}


async def produce(host: str, port: int, rate: float, seconds: float, connections: int) -> int:
    """Submit jobs open-loop at `rate` per second for `seconds` over a few keep-alive
    connections; returns how many were accepted (201)."""
    request = encode_request(
        "POST",
        "/v1/jobs",
        f"{host}:{port}",
        [("Content-Type", "application/json"), *PRINCIPAL.items()],
        json.dumps(JOB).encode(),
    )
    total = int(rate * seconds)
    started = trio.current_time()
    next_slot = 0
    accepted = 0

    async def worker() -> None:
        nonlocal next_slot, accepted
        conn = await H1Connection.open(host, port)
        try:
            while next_slot < total:
                slot = next_slot
                next_slot += 1
                await trio.sleep_until(started + slot / rate)  # the schedule, not a wait
                answer = await conn.request(request)
                accepted += answer.status == 201
        finally:
            conn.close()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return accepted


def start_reader(
    host: str, port: int, subscribers: int, sample_every: int, drain: bool
) -> subprocess.Popen[str]:
    """The subscribers, in a process of their own (benchmarks/fanout_reader.py), once every
    stream is open."""
    script = str(REPO / "benchmarks" / "fanout_reader.py")
    argv = [sys.executable, script, host, str(port), str(subscribers), str(sample_every)]
    reader = subprocess.Popen(
        [*argv, "drain"] if drain else argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "ready":
        reader.kill()
        raise RuntimeError("the fan-out reader could not open its streams")
    return reader


async def bench_fanout(
    subscribers: int,
    rate: float,
    seconds: float,
    sample_every: int,
    drain: bool,
    profile: Path | None,
) -> None:
    print(f"pinning:        {pin_load_generator()}; fd limit {raise_fd_limit()}")
    with tempfile.TemporaryDirectory() as state_dir:
        server = start_emulator(Path(state_dir))
        reader: subprocess.Popen[str] | None = None
        try:
            host, port = server.host, server.port
            reader = start_reader(host, port, subscribers, sample_every, drain)
            assert reader.stdin is not None
            assert reader.stdout is not None
            control = await H1Connection.open(host, port)
            before = _fabric_state(await _state(control, f"{host}:{port}"))
            if profile is not None:
                server.start_profiler(profile)
            server.reset_peak_rss()
            rss_before = server.rss()
            cpu_before = server.cpu_seconds()
            began, began_wall = time.perf_counter(), time.time()
            accepted = await produce(host, port, rate, seconds, 64)
            produced = time.perf_counter() - began
            # Drain: the executor going idle is only visible in the emulator's state, so that
            # is polled; then the reader waits (bounded) for every stream to have the last event.
            while True:
                final = _fabric_state(await _state(control, f"{host}:{port}"))
                executor = final.get("executor", {})
                if not executor.get("queued") and not executor.get("active_runs"):
                    break
                await trio.sleep(0.05)
            last = int(final["events"])
            reader.stdin.write(f"expect {int(before['events'])} {last}\n")
            reader.stdin.flush()
            result = json.loads(await trio.to_thread.run_sync(reader.stdout.readline))
            ended = _fabric_state(await _state(control, f"{host}:{port}"))
            server.stop_profiler()
            cpu = server.cpu_seconds() - cpu_before
            control.close()
            peak, rss_after = server.peak_rss(), server.rss()
        finally:
            if reader is not None:
                reader.kill()
            server.stop()
    elapsed = result["done_at"] - began_wall
    expected = result["expected"]
    tallied = result["tallied"]
    short = tallied - result["complete"]
    print(
        f"jobs:           {accepted} accepted in {produced:.1f} s "
        f"({accepted / produced:,.0f}/s, asked {rate:,.0f}/s)"
    )
    print(
        f"subscribers:    {subscribers}, events published {expected}; every event once and "
        f"in order at all {tallied} tallied: {short == 0} ({short} short or out of order)"
    )
    if result["drained"]:
        low, high = result["drained_bytes"]
        tallied_low, tallied_high = result["tallied_bytes"]
        print(
            f"                {result['drained']} drained (bytes discarded unread, counted): "
            f"{low:,} to {high:,} bytes each; the tallied ones {tallied_low:,} to "
            f"{tallied_high:,} (equal when the hub wrote every write to every one alike)"
        )
    hub = ended.get("subscribers", {})
    print(
        f"                dropped as too slow (more than subscriber_buffer events behind): "
        f"{result['overflowed']} saw the overflow comment; the hub counts "
        f"{hub.get('dropped_for_overflow', '?')}"
    )
    if short:
        count, first, last_seen, broken = result["example"]
        print(f"                e.g. got {count}, first {first}, last {last_seen}: {broken}")
    reads = result["reads"]
    print(
        f"delivered:      {expected / elapsed:,.0f} events/s to each subscriber "
        f"({expected * subscribers / elapsed:,.0f} deliveries/s), from the first job "
        "submitted to the last event received everywhere"
    )
    print(
        f"reads:          {reads:,} with events (tallied), "
        f"{expected * tallied / max(reads, 1):.1f} "
        "events per read on average"
    )
    print(
        f"delay:          p50 {result['delay_p50'] * 1000:.1f} ms, "
        f"p99 {result['delay_p99'] * 1000:.1f} ms, max {result['delay_max'] * 1000:.1f} ms "
        "(upper bound: each read counted at its oldest event; target p99 < 50)"
    )
    print(
        f"                exact over {result['exact_count']} deliveries to every "
        f"{sample_every}th subscriber: p50 {result['exact_p50'] * 1000:.1f} ms, "
        f"p99 {result['exact_p99'] * 1000:.1f} ms"
    )
    load_cpu = result["cpu_user"] + result["cpu_system"]
    print(
        f"emulator:       CPU {cpu:.1f} s over {elapsed:.1f} s ({cpu / elapsed:.0%} of a core); "
        f"subscribers' process CPU {load_cpu:.1f} s (user {result['cpu_user']:.1f}, "
        f"system {result['cpu_system']:.1f})"
    )
    print(
        f"emulator RSS:   {rss_before / 2**20:.0f} MiB before, peak {peak / 2**20:.0f} MiB, "
        f"{rss_after / 2**20:.0f} MiB after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["jobs", "fanout"])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--sample-every", type=int, default=10, help="fanout: every Nth subscriber is exact"
    )
    parser.add_argument(
        "--drain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fanout: tally only the sampled subscribers and discard the others' bytes unread "
        "(counted); --no-drain tallies every subscriber (then the subscribers' process, not "
        "the emulator, limits the delays on two cores)",
    )
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the emulator")
    args: Any = parser.parse_args()
    if args.what == "jobs":
        trio.run(bench_jobs, args.clients, args.seconds, args.client == "raw", args.profile)
    else:
        trio.run(
            bench_fanout,
            args.subscribers,
            args.rate,
            args.seconds,
            args.sample_every,
            args.drain,
            args.profile,
        )


if __name__ == "__main__":
    main()
