"""The subscriber side of the Fabric fan-out benchmark: a process of its own on the load core.

    python benchmarks/fanout_reader.py HOST PORT SUBSCRIBERS SAMPLE_EVERY [drain]

Owns opening SUBSCRIBERS streams of `/v1/events/stream` and reading them all from one epoll
loop, each read handed to the stream's `StreamTally` (benchmarks/sseclient.py). One loop
instead of a trio task per stream: a task pays a scheduler pass and an epoll registration per
read, which at a thousand streams cost more than the reads. Protocol on stdin/stdout, one line
each: it prints `ready` once every stream is open; then reads until it is sent `expect
BEFORE LAST` (the event sequence before the run and the last one published) and every stream
has LAST, or 30 s more have passed; then prints its summary as one JSON object and exits.

With `drain`, only every SAMPLE_EVERY-th stream is tallied; the others are read with
`MSG_TRUNC` (the kernel discards the bytes, no copy) and only their byte counts are kept, so
that the subscribers' side costs less than the server's and the delays measured are the
server's, not this process's queue. Those streams are then judged by their byte counts only
(compared with the tallied ones'), once every stream has been quiet for a moment.
Linux only (epoll), like the rest of the benchmarks (/proc). Imports numpy and the standard
library.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.procs import pin_load_generator, raise_fd_limit
from benchmarks.sseclient import RECV_SIZE, StreamTally, open_stream

PRINCIPAL = {"X-Principal-Id": "0b0b0b0b-0000-4000-8000-000000000001"}
DRAIN_SECONDS = 30.0
# How long every stream must have been quiet before the drained streams' counts are final.
QUIET_SECONDS = 0.3


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


class Drained:
    """A stream whose bytes are discarded as they come: how many there were."""

    __slots__ = ("received",)

    def __init__(self) -> None:
        self.received = 0


def summary(
    tallies: list[StreamTally],
    received: dict[int, int],
    drained: list[Drained],
    before: int,
    last: int,
    done_at: float,
) -> dict[str, Any]:
    expected = last - before
    tallied_bytes = list(received.values())
    drained_bytes = [d.received for d in drained]
    complete = [t for t in tallies if t.in_order and t.count == expected and t.last == last]
    bad = next((t for t in tallies if t not in complete), None)
    delays = [pair for t in tallies for pair in t.delays]
    exact = [d for t in tallies for d in t.exact_delays]
    times = os.times()
    return {
        "expected": expected,
        "tallied": len(tallies),
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
        "tallied_bytes": [min(tallied_bytes, default=0), max(tallied_bytes, default=0)],
        "drained": len(drained),
        "drained_bytes": [min(drained_bytes, default=0), max(drained_bytes, default=0)],
        "cpu_user": times.user,
        "cpu_system": times.system,
    }


def main() -> None:
    host, port, subscribers, sample_every = sys.argv[1], *map(int, sys.argv[2:5])
    drain = sys.argv[5:] == ["drain"]
    pin_load_generator()
    raise_fd_limit()
    tallies: list[StreamTally] = []
    drained: list[Drained] = []
    poller = select.epoll()
    streams: dict[int, tuple[socket.socket, StreamTally | Drained]] = {}
    received: dict[int, int] = {}  # bytes read by each tallied stream
    for index in range(subscribers):
        sock, rest = open_stream(host, port, "/v1/events/stream", PRINCIPAL)
        reader: StreamTally | Drained
        if drain and index % sample_every:
            reader = Drained()
            reader.received = len(rest)
            drained.append(reader)
        else:
            reader = StreamTally(exact=index % sample_every == 0)
            tallies.append(reader)
            received[id(reader)] = len(rest)
            if rest:
                reader.feed(rest, time.time())
        sock.setblocking(False)
        streams[sock.fileno()] = (sock, reader)
        poller.register(sock.fileno(), select.EPOLLIN)
    commands = sys.stdin.fileno()
    poller.register(commands, select.EPOLLIN)
    print("ready", flush=True)
    scratch = bytearray(RECV_SIZE)
    target: tuple[int, int] | None = None
    deadline = float("inf")
    waiting = list(tallies)
    quiet_since: float | None = None
    done_at: float | None = None  # when the last tallied stream had the last event
    while True:
        ready = poller.poll(QUIET_SECONDS / 3 if not waiting else 1.0)
        for fd, _ in ready:
            if fd == commands:
                words = sys.stdin.readline().split()
                target = (int(words[1]), int(words[2]))
                deadline = time.monotonic() + DRAIN_SECONDS
                poller.unregister(commands)
                continue
            sock, reader = streams[fd]
            try:
                if isinstance(reader, Drained):
                    count = sock.recv_into(scratch, RECV_SIZE, socket.MSG_TRUNC)
                    reader.received += count
                    if not count:
                        poller.unregister(fd)
                    continue
                data = sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            if not data:
                poller.unregister(fd)
                continue
            received[id(reader)] += len(data)
            reader.feed(data, time.time())
        if target is not None:
            waiting = [t for t in waiting if t.last < target[1]]
            if time.monotonic() > deadline:
                break
            if not waiting:
                done_at = done_at or time.time()
                if not drained:
                    break
                # The drained streams have no events to wait for: wait for quiet instead.
                now = time.monotonic()
                if ready:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= QUIET_SECONDS:
                    break
    assert target is not None
    finished = done_at or time.time()
    result = summary(tallies, received, drained, target[0], target[1], finished)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
