"""Benchmark: `POST /api/v2/match/record` latency at 16 concurrent clients.

`python benchmarks/foundryops_match.py [--rows 1000000] [--clients 16] [--seconds 10]
[--runs 3] [--profile out.txt]` starts a FoundryOps server on a generated snapshot (pinned to
core 0 with taskset when there are two cores), then runs closed-loop clients (one keep-alive
HTTP/1.1 connection each, the suite's lean raw-socket client in `benchmarks/h1.py`, this
process pinned to core 1 so the generator does not eat the server's core) sending records
drawn from the same generator (half with a domain, some misspelt). Prints, per measured
window, throughput, latency percentiles (target p99 <= 10 ms) and the server's CPU time per
request read from /proc: on a shared machine that figure moves much less than latency does.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import trio

from benchmarks.foundryops_common import API_KEY, foundryops_server
from benchmarks.h1 import encode_request
from benchmarks.loadgen import Figures, closed_loop, expect_status
from benchmarks.procs import ProcessStats, pin_load_generator
from emulator.foundryops.core.generate import company_rows


def queries(rows: int, count: int) -> list[dict[str, object]]:
    rng = random.Random(7)
    sample = list(company_rows(min(rows, 200_000)))
    out: list[dict[str, object]] = []
    for _ in range(count):
        name, domain, _ = rng.choice(sample)
        if rng.random() < 0.3:
            spot = rng.randrange(len(name))
            name = name[:spot] + name[spot + 1 :]
        record: dict[str, object] = {"company_name": name}
        if rng.random() < 0.5:
            record["domain"] = domain
        out.append({"snapshot_id": "dss_bench", "record": record, "options": {"top_n": 5}})
    return out


def requests_for(host: str, bodies: list[dict[str, object]]) -> list[bytes]:
    headers = [("Authorization", f"Bearer {API_KEY}"), ("Content-Type", "application/json")]
    return [
        encode_request("POST", "/api/v2/match/record", host, headers, json.dumps(body).encode())
        for body in bodies
    ]


def handler_mean_ms(url: str) -> tuple[float, float]:
    """The server's own view: mean handler time (ms) and count, from its Prometheus histogram."""
    text = httpx.get(url + "/metrics").text
    figures: dict[str, float] = {}
    for line in text.splitlines():
        if 'route="/api/v2/match/record"' in line and line.startswith(
            ("foundryops_request_duration_seconds_sum", "foundryops_request_duration_seconds_count")
        ):
            figures[line.split("{")[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
    if not figures.get("count"):
        return float("nan"), 0.0
    return figures["sum"] / figures["count"] * 1000, figures["count"]


def show(number: int, result: Figures) -> None:
    print(
        f"run {number}: {result.ops:,} requests, {result.throughput:,.0f}/s; "
        f"p50 {result.p50_ms:.2f} ms, p90 {result.p90_ms:.2f}, p99 {result.p99_ms:.2f}, "
        f"max {result.max_ms:.1f}; server CPU {result.server_cpu_ms_per_op:.3f} ms/request "
        f"({result.server_cpu_percent:.0f}% of a core), client CPU "
        f"{result.client_cpu_percent:.0f}%; errors {result.errors}"
    )
    for sample in result.error_samples[:3]:
        print("  error:", sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of the server here")
    parser.add_argument("--no-pin", action="store_true", help="leave both processes unpinned")
    args = parser.parse_args()
    bodies = queries(args.rows, 20_000)
    with foundryops_server(args.rows, pin=not args.no_pin) as (url, pid):
        print("not pinned" if args.no_pin else pin_load_generator())
        host, port = url.removeprefix("http://").rsplit(":", 1)
        requests = requests_for(f"{host}:{port}", bodies)
        stats = ProcessStats(pid)
        profiler = start_profiler(pid, args.profile) if args.profile is not None else None
        results: list[Figures] = []
        for number in range(1, args.runs + 1):

            def request(sequence: int) -> bytes:
                return requests[sequence % len(requests)]

            result = trio.run(
                lambda: closed_loop(
                    "match/record", stats, host, int(port), request, expect_status(200),
                    concurrency=args.clients, warmup=1.0, duration=args.seconds,
                )
            )  # fmt: skip
            show(number, result)
            results.append(result)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        mean, count = handler_mean_ms(url)
        print(f"server handler time: mean {mean:.2f} ms over {count:.0f} requests")
        p99 = sorted(r.p99_ms for r in results)
        cpu = sorted(r.server_cpu_ms_per_op for r in results)
        print(
            f"over {len(results)} runs: p99 {p99[0]:.2f} to {p99[-1]:.2f} ms (target <= 10), "
            f"server CPU {cpu[0]:.3f} to {cpu[-1]:.3f} ms/request"
        )


def start_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (raw collapsed stacks) until sent SIGINT."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--format", "raw",
         "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


if __name__ == "__main__":
    main()
