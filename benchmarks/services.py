"""Run every service benchmark in turn: `python benchmarks/services.py [--only NAME,...]`.

`benchmarks/run.py` measures Foundry's job plane; the other services' targets (issues 13, 14 and
15) and the state-file save have scripts of their own, each starting its own server and printing
its own figures against a baseline it measures in the same run. This runs them one after the
other with their default sizes, each in a child process with this Python (so they never share a
core with each other), prints each one's output under its name, and ends with how long each took
and whether it exited cleanly. It asserts nothing about the figures (the machines are noisy);
the exit code is non-zero when a script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

# (name, the script and its arguments): the targets each one prints are in its docstring.
BENCHMARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fabric-jobs", ("fabric_jobs.py", "jobs")),
    ("fabric-fanout", ("fabric_jobs.py", "fanout")),
    ("foundryops-index", ("foundryops_index.py",)),
    ("foundryops-match", ("foundryops_match.py",)),
    ("foundryops-filejob", ("foundryops_filejob.py",)),
    ("connectsoft-reads", ("connectsoft_reads.py",)),
    ("connectsoft-streams", ("connectsoft_streams.py",)),
    ("statesave", ("statesave.py",)),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(name for name, _ in BENCHMARKS)
    parser.add_argument("--only", help=f"comma-separated names among: {names}")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else {name for name, _ in BENCHMARKS}
    unknown = wanted - {name for name, _ in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark {', '.join(sorted(unknown))} (choose among: {names})")
    outcomes: list[tuple[str, float, int]] = []
    for name, (script, *arguments) in BENCHMARKS:
        if name not in wanted:
            continue
        print(f"\n== {name}: python benchmarks/{script} {' '.join(arguments)}".rstrip(), flush=True)
        started = time.monotonic()
        done = subprocess.run([sys.executable, str(BENCH_DIR / script), *arguments], check=False)
        outcomes.append((name, time.monotonic() - started, done.returncode))
    print("\n== summary")
    for name, seconds, code in outcomes:
        print(f"{name:20} {seconds:6.1f} s  {'ok' if code == 0 else f'FAILED (exit {code})'}")
    return 0 if all(code == 0 for _, _, code in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
