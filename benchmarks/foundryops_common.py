"""Shared pieces of the FoundryOps benchmarks: a server process on a generated snapshot.

Owns `foundryops_server` (writes a seed with one generated dataset, starts `python -m emulator
serve --services foundryops` on free ports, waits for its endpoints file and for the snapshot's
index to be warm, stops it afterwards), `rss_mib` and `percentile`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.procs import SERVER_CORE, can_pin

API_KEY = "fo_bench_key_0001"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ROOT = Path(__file__).resolve().parent.parent


def seed_text(rows: int) -> str:
    return f"""\
foundryops:
  api_keys:
    - key: {API_KEY}
      id: bench
      tier: bench
  tiers:
    bench: {{requests_per_minute: 100000000, burst: 10000000, max_concurrent_jobs: 4,
             max_queued_jobs: 16}}
  datasets:
    - id: ds_bench
      name: Bench accounts
      snapshot_id: dss_bench
      generate: {rows}
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


@contextmanager
def foundryops_server(rows: int, *, pin: bool = False) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of a FoundryOps server whose `dss_bench` has `rows` generated records;
    with `pin`, the server runs on core 0 only (`taskset`, when there are two cores)."""
    with tempfile.TemporaryDirectory(prefix="fo-bench-") as folder:
        base = Path(folder)
        (base / "seed.yaml").write_text(seed_text(rows))
        endpoints = base / "endpoints.json"
        taskset = ["taskset", "-c", str(SERVER_CORE)] if pin and can_pin() else []
        process = subprocess.Popen(
            [*taskset, sys.executable, "-m", "emulator", "serve", "--seed", str(base / "seed.yaml"),
             "--services", "foundryops", "--port", "foundryops=0", "--no-tls",
             "--state-dir", str(base / "state"), "--endpoints-file", str(endpoints),
             "--log-level", "warning"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            started = time.perf_counter()
            while not endpoints.exists():
                if process.poll() is not None:
                    raise RuntimeError("the emulator exited while starting")
                time.sleep(0.1)
            url = json.loads(endpoints.read_text())["services"]["foundryops"]["http"]
            print(f"server up with {rows:,} generated records in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            # The first match builds the snapshot's index; time it.
            started = time.perf_counter()
            httpx.post(
                url + "/api/v2/match/record",
                headers=AUTH,
                json={"snapshot_id": "dss_bench", "record": {"company_name": "warm up"}},
                timeout=600,
            ).raise_for_status()
            print(f"index ready after {time.perf_counter() - started:.1f} s")
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=30)
