"""ConnectSoft REST reads against the calibration baseline: run this file with python.

Measures the bare h11 baseline server (benchmarks/baseline_h11.py) and then the emulator
(ConnectSoft only, one seeded environment with 20 services) with the suite's closed-loop load
generator: `GET /runtime/environments/{id}`, `GET /runtime/services/{id}/health` and
`GET /runtime/drift/{id}`, each with a bearer token. Prints requests/s, p99 and the ratio to the
baseline (the issue's target is at least 0.25). Exits non-zero on any error answer.
`--duration` sets the measured seconds per run (default 3).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from benchmarks.h1 import encode_request
from benchmarks.loadgen import Figures, closed_loop, expect_status
from benchmarks.procs import baseline_server, emulator_server, pin_load_generator

ENV = "env-00bench0"
SEED = f"""\
connectsoft:
  clients:
    - {{client_id: bench, client_secret: bench-secret, tenants: [bench]}}
  environments:
    - environment_id: {ENV}
      tenant_id: bench
      project_id: proj-bench
      name: bench
      services:
""" + "".join(
    f"        - {{service_id: svc-{n}, image: acr.io/svc-{n}:1.0.0, checks: [{{name: self}}]}}\n"
    for n in range(20)
)


def token(base: str) -> str:
    request = urllib.request.Request(
        f"{base}/connect/token",
        data=urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": "bench",
                "client_secret": "bench-secret",
            }
        ).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.load(response)["access_token"])


async def measure(args: argparse.Namespace) -> int:
    runs: list[tuple[str, Figures]] = []
    with baseline_server() as baseline:
        request = encode_request("GET", "/", f"{baseline.host}:{baseline.port}")
        runs.append(
            (
                "baseline",
                await closed_loop(
                    "baseline h11",
                    baseline,
                    baseline.host,
                    baseline.port,
                    request,
                    expect_status(200),
                    concurrency=args.concurrency,
                    warmup=1.0,
                    duration=args.duration,
                ),
            )
        )
    seed = Path(tempfile.mkdtemp(prefix="cs-reads-")) / "seed.yaml"
    seed.write_text(SEED)
    with emulator_server(seed, ["--services", "connectsoft", "--port", "connectsoft=0"]) as server:
        bearer = token(server.url)
        host = f"{server.host}:{server.port}"
        headers = [("Authorization", f"Bearer {bearer}")]
        for name, path in (
            ("GET environment", f"/runtime/environments/{ENV}"),
            ("GET health", "/runtime/services/svc-3/health"),
            ("GET drift", f"/runtime/drift/{ENV}"),
        ):
            runs.append(
                (
                    name,
                    await closed_loop(
                        name,
                        server,
                        server.host,
                        server.port,
                        encode_request("GET", path, host, headers),
                        expect_status(200),
                        concurrency=args.concurrency,
                        warmup=1.0,
                        duration=args.duration,
                    ),
                )
            )
    base_rate = runs[0][1].throughput or 1.0
    errors = 0
    for name, result in runs:
        rate = result.throughput or 0.0
        errors += result.errors
        print(
            f"{name:16} {rate:9.0f} req/s  p99 {result.p99_ms:7.2f} ms  "
            f"ratio {rate / base_rate:5.2f}  errors {result.errors}"
        )
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    pin_load_generator()
    return trio.run(measure, args)


if __name__ == "__main__":
    sys.exit(main())
