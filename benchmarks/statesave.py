"""Benchmark: how long a `--state-file` save stalls the event loop of a busy emulator.

`python benchmarks/statesave.py [--jobs 20000] [--runs 3]` builds a Fabric service in this
process (the real instance, from a seed), finishes N jobs through the control plane's own hooks
(as the executor does, without HTTP), then saves the state file twice per run while a probe
task on the same trio loop sleeps 1 ms at a time and records how late each wake-up is:

- the emulator's way: `statefile.capture` on the loop, the rest in a worker thread;
- the baseline, in the same run: `statefile.collect` (every service's whole snapshot) on the
  loop, then the same write in a worker thread, which is what a save cost before services
  could defer their rendering.

Prints, for both, the time on the loop, the time in the thread, the probe's longest and p99
lateness, and the ratio of the longest stalls. The figures move with the machine; compare the
two lines of one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from emulator.fabric.core.auth import AuthMethod, Caller
from emulator.fabric.core.plane import ControlPlane
from emulator.fabric.core.tenancy import DEFAULT_ORG_ID, Role
from emulator.fabric.core.workflows import WorkflowRun
from emulator.platform.seeds import load_seed
from emulator.platform.settings import Settings
from emulator.platform.statefile import capture, collect, save_state
from emulator.services import registered_services
from emulator.web.app import Emulator, build_emulator

PRINCIPAL = "0b0b0b0b-0000-4000-8000-000000000001"


def finish(plane: ControlPlane, run: WorkflowRun) -> None:
    """What the executor does to a run whose every node succeeds."""
    plane.run_start(run)
    for key in run.nodes:
        plane.node_ready(run, key)
        plane.node_start(run, key)
        plan = plane.catalog.plan(plane.node_request(run, key), plane.random)
        plane.node_complete(run, key, plan)
    plane.run_finish(run)


def build(directory: Path, jobs: int) -> Emulator:
    seed_path = directory / "seed.yaml"
    seed_path.write_text("fabric: {}\n")
    settings = Settings(state_file=directory / "state.json", state_dir=directory)
    services = [s for s in registered_services() if s.name == "fabric"]
    emulator = build_emulator(settings, load_seed(seed_path, services), services=services)
    plane: ControlPlane = emulator.services["fabric"].plane  # type: ignore[attr-defined]
    plane.tenancy.grant(PRINCIPAL, DEFAULT_ORG_ID, Role.OWNER, plane.now())
    caller = Caller(PRINCIPAL, AuthMethod.DEV_HEADER)
    for index in range(jobs):
        body = {
            "modality": "text",
            "input": {"prompt": f"benchmark prompt {index}"},
            "organization_id": DEFAULT_ORG_ID,
        }
        job, _ = plane.submit_job(caller, body)
        finish(plane, plane.runs[job.workflow_run_id])
    return emulator


async def timed_save(
    emulator: Emulator, take: Callable[[], dict[str, Any]]
) -> tuple[float, float, list[float]]:
    """(seconds on the loop, seconds in the thread, the probe's lateness samples)."""
    lateness: list[float] = []
    done = False

    async def probe() -> None:
        while not done:
            before = trio.current_time()
            await trio.sleep(0.001)
            lateness.append(trio.current_time() - before - 0.001)

    path = emulator.settings.state_file
    assert path is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        await trio.sleep(0.05)
        started = time.perf_counter()
        document = take()
        taken = time.perf_counter()
        await trio.to_thread.run_sync(save_state, path, document)
        written = time.perf_counter()
        await trio.sleep(0.05)
        done = True
    return taken - started, written - taken, lateness


def describe(name: str, loop: float, thread: float, lateness: list[float]) -> str:
    ordered = sorted(lateness)
    p99 = ordered[int(len(ordered) * 0.99)]
    return (
        f"{name}: loop {loop * 1000:7.1f} ms, thread {thread * 1000:7.1f} ms, "
        f"longest stall {ordered[-1] * 1000:6.1f} ms, p99 lateness {p99 * 1000:5.1f} ms"
    )


async def main(jobs: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="statesave-") as name:
        directory = Path(name)
        started = time.perf_counter()
        emulator = build(directory, jobs)
        print(f"{jobs:,} finished jobs built in {time.perf_counter() - started:.1f} s")
        services, carried = emulator.services, emulator.carried_state
        for run in range(1, runs + 1):
            new = await timed_save(emulator, lambda: capture(services, carried))
            old = await timed_save(emulator, lambda: collect(services, carried))
            size = (directory / "state.json").stat().st_size / 2**20
            print(f"run {run} ({size:.1f} MiB file)")
            print("  " + describe("capture (emulator) ", *new))
            print("  " + describe("collect (baseline)", *old))
            print(f"  longest stall: {max(new[2]) / max(old[2]):.2f} x the baseline's")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    trio.run(main, args.jobs, args.runs)
