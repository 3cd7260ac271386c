"""Benchmark: build the matcher's blocking index over generated company records.

`python benchmarks/foundryops_index.py [--rows 1000000]` prints records indexed per second and
bytes of index per record (targets: >= 100,000 records/s, <= 300 bytes/record), in-process and
single-threaded, as the engine's worker thread builds it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator.foundryops.core.generate import company_rows
from emulator.foundryops.core.matcher import MatchIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rows = [(name, domain, None) for name, domain, _ in company_rows(args.rows)]
    started = time.perf_counter()
    index = MatchIndex.build("dss_bench", rows)
    seconds = time.perf_counter() - started
    print(f"rows: {args.rows:,}")
    print(f"build: {seconds:.2f} s, {args.rows / seconds:,.0f} records/s (target >= 100,000)")
    per_record = index.index_bytes() / args.rows
    print(f"index: {per_record:.0f} bytes/record (target <= 300)")
    print(f"blocking keys: {len(index.keys):,} ({len(index.keys) / args.rows:.1f} per record)")


if __name__ == "__main__":
    main()
