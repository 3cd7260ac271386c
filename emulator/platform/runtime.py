"""Process-wide tuning of the `emulator serve` process (not of an embedded emulator, whose
process belongs to its host).

Owns `tune_garbage_collector`. CPython's cyclic collector stops the whole process while it
scans; a full (oldest-generation) scan walks every tracked object, and right after start most
of those are the imported modules, classes and app objects that live until exit. Measured on
Fabric's jobs benchmark, full scans paused the event loop for 40 to 180 ms and made the slow
tail (p99 3.4 x p50); young-generation scans every 700 allocations cost about a fifth of the
CPU. So, once everything is built: collect, freeze the survivors (moved out of the scanned
generations for good; reference counting still frees them) and scan the youngest generation
less often. Objects made afterwards (jobs, events, connections) are collected as before,
but full scans, which walk every retained job, run, event and token (about 150 ms per 50,000
retained Fabric jobs), come ten times less often: CPython runs one only after ten collections
of the middle generation (`OLD_THRESHOLD`, 100 here) and once a quarter of the old
generation is new. Cyclic garbage that lived long enough to reach the old generation waits
longer for it; reference counting frees everything else at once.
Imports only the standard library.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) between two young-generation scans; CPython's default
# is 700. The middle generation keeps its default (10).
YOUNG_THRESHOLD = 10_000
# Middle-generation scans between two full scans; CPython's default is 10.
OLD_THRESHOLD = 100


def tune_garbage_collector() -> int:
    """Freeze what exists now and raise the young and old thresholds; returns how many
    objects were frozen."""
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, OLD_THRESHOLD)
    return gc.get_freeze_count()
