"""The subscriber side of the Fabric fan-out benchmark: a process of its own on the load core.

    python benchmarks/fanout_reader.py HOST PORT SUBSCRIBERS SAMPLE_EVERY

Owns opening SUBSCRIBERS streams of `/v1/events/stream` and reading them all from one epoll
loop, each read handed to the stream's `StreamTally` (benchmarks/sseclient.py). One loop
instead of a trio task per stream: a task pays a scheduler pass and an epoll registration per
read, which at a thousand streams cost more than the reads. Protocol on stdin/stdout, one line
each: it prints `ready` once every stream is open; then reads until it is sent `expect
BEFORE LAST` (the event sequence before the run and the last one published) and every stream
has LAST, or 30 s more have passed; then prints its summary as one JSON object and exits.
Linux only (epoll), like the rest of the benchmarks (/proc). Imports numpy and the standard
library.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.procs import pin_load_generator, raise_fd_limit
from benchmarks.sseclient import RECV_SIZE, StreamTally, open_stream

PRINCIPAL = {"X-Principal-Id": "0b0b0b0b-0000-4000-8000-000000000001"}
DRAIN_SECONDS = 30.0


def weighted_quantile(pairs: list[tuple[float, int]], q: float) -> float:
    ordered = sorted(pairs)
    total = sum(weight for _, weight in ordered)
    if not total:
        return float("nan")
    wanted, seen = q * total, 0
    for value, weight in ordered:
        seen += weight
        if seen >= wanted:
            return value
    return ordered[-1][0]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def summary(tallies: list[StreamTally], before: int, last: int, done_at: float) -> dict[str, Any]:
    expected = last - before
    complete = [t for t in tallies if t.in_order and t.count == expected and t.last == last]
    bad = next((t for t in tallies if t not in complete), None)
    delays = [pair for t in tallies for pair in t.delays]
    exact = [d for t in tallies for d in t.exact_delays]
    times = os.times()
    return {
        "expected": expected,
        "complete": len(complete),
        "overflowed": sum(t.overflowed for t in tallies),
        "example": None if bad is None else [bad.count, bad.first, bad.last, bad.broken],
        "reads": len(delays),
        "delay_p50": weighted_quantile(delays, 0.5),
        "delay_p99": weighted_quantile(delays, 0.99),
        "delay_max": max((d for d, _ in delays), default=float("nan")),
        "exact_count": len(exact),
        "exact_p50": quantile(exact, 0.5),
        "exact_p99": quantile(exact, 0.99),
        "done_at": done_at,
        "cpu_user": times.user,
        "cpu_system": times.system,
    }


def main() -> None:
    host, port, subscribers, sample_every = sys.argv[1], *map(int, sys.argv[2:5])
    pin_load_generator()
    raise_fd_limit()
    tallies = [StreamTally(exact=index % sample_every == 0) for index in range(subscribers)]
    poller = select.epoll()
    streams = {}
    for tally in tallies:
        sock, rest = open_stream(host, port, "/v1/events/stream", PRINCIPAL)
        if rest:
            tally.feed(rest, time.time())
        sock.setblocking(False)
        streams[sock.fileno()] = (sock, tally)
        poller.register(sock.fileno(), select.EPOLLIN)
    commands = sys.stdin.fileno()
    poller.register(commands, select.EPOLLIN)
    print("ready", flush=True)
    target: tuple[int, int] | None = None
    deadline = float("inf")
    waiting = list(tallies)
    while True:
        for fd, _ in poller.poll(1.0):
            if fd == commands:
                words = sys.stdin.readline().split()
                target = (int(words[1]), int(words[2]))
                deadline = time.monotonic() + DRAIN_SECONDS
                poller.unregister(commands)
                continue
            sock, tally = streams[fd]
            try:
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            if not data:
                poller.unregister(fd)
                continue
            tally.feed(data, time.time())
        if target is not None:
            waiting = [t for t in waiting if t.last < target[1]]
            if not waiting or time.monotonic() > deadline:
                break
    done_at = time.time()
    assert target is not None
    print(json.dumps(summary(tallies, target[0], target[1], done_at)), flush=True)


if __name__ == "__main__":
    main()
