"""The serve process's collector tuning, in a child process (freezing the heap of the test
process itself would outlive the test)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from emulator.platform.runtime import OLD_THRESHOLD, YOUNG_THRESHOLD, tune_garbage_collector
before = gc.get_threshold()
frozen = tune_garbage_collector()
after = gc.get_threshold()
assert frozen == gc.get_freeze_count() > 1000, frozen
assert after == (YOUNG_THRESHOLD, before[1], OLD_THRESHOLD), (before, after)
assert YOUNG_THRESHOLD > before[0]
assert OLD_THRESHOLD > before[2]
print("ok")
"""


def test_tuning_freezes_the_start_up_heap_and_raises_the_young_and_old_thresholds() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
