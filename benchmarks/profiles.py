"""Summarise py-spy collapsed-stack profiles (written by `run.py --profile`).

`python benchmarks/profiles.py FILE [--top N] [--match TEXT]` prints the functions with the
most samples on their own (self) and anywhere on the stack (inclusive), and, with --match,
the share of samples whose stack contains TEXT. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{name} ({file})" if file else name


def summary(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(count for _, count in stacks) or 1
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
        modules[_package(frames[-1].partition(" (")[2])] += count
    lines = [f"{total} samples", "", "self:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines += ["", "self time by package:"]
    lines += [f"  {100 * c / total:5.1f}%  {m}" for m, c in modules.most_common(top)]
    return "\n".join(lines)


def _package(where: str) -> str:
    """The top-level package of "pkg/sub/module.py:123" (py-spy's short paths)."""
    path = where.split(":", 1)[0]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    parts = path.split("/")
    if parts[0] == "emulator" and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else f"stdlib {parts[0]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", action="append", default=[])
    args = parser.parse_args(argv)
    stacks = load(args.file)
    print(summary(stacks, args.top))
    total = sum(count for _, count in stacks) or 1
    for text in args.match:
        hits = sum(count for frames, count in stacks if any(text in f for f in frames))
        print(f"stacks containing {text!r}: {100 * hits / total:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
