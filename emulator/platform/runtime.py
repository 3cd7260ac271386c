"""Process-wide tuning of the `emulator serve` process (not of an embedded emulator, whose
process belongs to its host).

Owns `tune_garbage_collector`. CPython's cyclic collector stops the whole process while it
scans; a full (oldest-generation) scan walks every tracked object, and right after start most
of those are the imported modules, classes and app objects that live until exit. Measured on
Fabric's jobs benchmark, full scans paused the event loop for 40 to 180 ms and made the slow
tail (p99 3.4 x p50); young-generation scans every 700 allocations cost about a fifth of the
CPU. So, once everything is built: collect, freeze the survivors (moved out of the scanned
generations for good; reference counting still frees them) and scan the youngest generation
less often. Objects made afterwards (jobs, events, connections) are collected as before.
Imports only the standard library.
"""

from __future__ import annotations

import gc

# Allocations (minus deallocations) between two young-generation scans; CPython's default
# is 700. The older generations keep their defaults (10, 10).
YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> int:
    """Freeze what exists now and raise the young threshold; returns how many objects were
    frozen."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()
