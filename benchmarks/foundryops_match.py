"""Benchmark: `POST /api/v2/match/record` latency at 16 concurrent clients.

`python benchmarks/foundryops_match.py [--rows 1000000] [--clients 16] [--seconds 10]` starts a
FoundryOps server on a generated snapshot, then runs closed-loop clients (one HTTP/1.1
connection each) sending records drawn from the same generator (half with a domain, some
misspelt), and prints throughput and latency percentiles (target p99 <= 10 ms).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import trio

from benchmarks.foundryops_common import AUTH, foundryops_server, percentile
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


async def client(url: str, bodies: list[dict[str, object]], until: float, out: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as http:
        position = 0
        while time.perf_counter() < until:
            body = bodies[position % len(bodies)]
            position += 1
            started = time.perf_counter()
            response = await http.post("/api/v2/match/record", json=body)
            out.append(time.perf_counter() - started)
            response.raise_for_status()


async def run(url: str, clients: int, seconds: float, bodies: list[dict[str, object]]) -> None:
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    async with trio.open_nursery() as nursery:
        for number in range(clients):
            nursery.start_soon(client, url, bodies[number::clients], until, latencies)
    ms = [x * 1000 for x in latencies]
    print(f"requests: {len(ms):,} in {seconds:g} s ({len(ms) / seconds:,.0f}/s, {clients} clients)")
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        print(f"{name}: {percentile(ms, fraction):.2f} ms")
    # The server's own view (handler time, from its Prometheus histogram).
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    figures = {}
    for line in text.splitlines():
        if 'route="/api/v2/match/record"' in line and line.startswith(
            ("foundryops_request_duration_seconds_sum", "foundryops_request_duration_seconds_count")
        ):
            figures[line.split("{")[0].rsplit("_", 1)[1]] = float(line.rsplit(" ", 1)[1])
    if figures.get("count"):
        mean = figures["sum"] / figures["count"] * 1000
        print(f"server handler time: mean {mean:.2f} ms over {figures['count']:.0f} requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    bodies = queries(args.rows, 20_000)
    with foundryops_server(args.rows) as (url, _pid):
        trio.run(run, url, args.clients, args.seconds, bodies)


if __name__ == "__main__":
    main()
