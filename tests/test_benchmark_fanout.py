"""The fan-out benchmark end to end at a small scale, in both of its modes: the emulator, its
job producer and the subscribers' process (benchmarks/fanout_reader.py) run as they do for the
figures, and the report must say that every tallied subscriber got every event once and in
order and that every drained one got as many bytes as the tallied ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fabric_jobs.py"
SMALL = ["--subscribers", "12", "--rate", "20", "--seconds", "0.5", "--sample-every", "3"]


def run_fanout(*extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "fanout", *SMALL, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(("mode", "tallied"), [("--drain", 4), ("--no-drain", 12)])
def test_the_fanout_benchmark_reports_every_event_delivered(mode: str, tallied: int) -> None:
    report = run_fanout(mode)
    published = re.search(r"events published (\d+); .* at all (\d+) tallied: (\w+)", report)
    assert published is not None, report
    assert int(published[1]) == 10 * 9  # ten jobs of nine events each
    assert (int(published[2]), published[3]) == (tallied, "True")
    drained = re.search(
        r"(\d+) drained .*: ([\d,]+) to ([\d,]+) bytes each; the tallied ones ([\d,]+) to ([\d,]+)",
        report,
    )
    if mode == "--drain":
        assert drained is not None, report
        assert int(drained[1]) == 12 - tallied
        low, high, tallied_low, tallied_high = (
            int(g.replace(",", "")) for g in drained.groups()[1:]
        )
        # Equal when every write went to every subscriber alike (the usual case); a stream
        # whose writes were grouped otherwise differs by a few bytes of chunk framing.
        assert 0.95 * tallied_low <= low <= high <= 1.05 * tallied_high
    else:
        assert drained is None
    assert "the hub counts 0" in report
