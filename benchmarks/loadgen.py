"""Load generator building blocks: recording operations, measuring a window, summarising.

Owns `Recorder` (latencies of operations completed inside the measured window, errors),
`measure_window` (warm-up, then a window bracketed by server CPU, client CPU and wall-clock
readings), `closed_loop` (C connections each sending one fixed request after another) and
`Figures` (the numbers every scenario reports). Imports trio and the benchmark's own modules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import trio

from benchmarks.h1 import H1Connection, HttpError, Response
from benchmarks.procs import ProcessStats, self_cpu_seconds

MAX_ERRORS_KEPT = 20


class Recorder:
    """Counts operations and keeps their latencies while the window is open; keeps errors always."""

    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.total = 0
        self.error_count = 0
        self.errors: list[str] = []

    def done(self, started: float, finished: float) -> None:
        self.total += 1
        if self.measuring:
            self.latencies.append(finished - started)

    def error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass
class Window:
    seconds: float
    server_cpu: float
    client_cpu: float


async def measure_window(
    recorders: list[Recorder], server: ProcessStats | None, warmup: float, duration: float
) -> Window:
    """Let the load run `warmup` seconds, then open every recorder for `duration` seconds."""
    await trio.sleep(warmup)
    cpu0 = server.cpu_seconds() if server else math.nan
    self0 = self_cpu_seconds()
    start = time.perf_counter()
    for recorder in recorders:
        recorder.measuring = True
    await trio.sleep(duration)
    for recorder in recorders:
        recorder.measuring = False
    elapsed = time.perf_counter() - start
    cpu1 = server.cpu_seconds() if server else math.nan
    return Window(elapsed, cpu1 - cpu0, self_cpu_seconds() - self0)


@dataclass
class Figures:
    """What every scenario reports (times in milliseconds, memory in bytes)."""

    name: str
    ops: int = 0
    throughput: float = math.nan
    unit: str = "ops/s"
    p50_ms: float = math.nan
    p90_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    server_cpu_ms_per_op: float = math.nan
    server_cpu_percent: float = math.nan
    client_cpu_percent: float = math.nan
    peak_rss: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


def figures(
    name: str,
    recorder: Recorder,
    window: Window | None,
    server: ProcessStats | None,
    *,
    unit: str = "ops/s",
) -> Figures:
    values = sorted(recorder.latencies)
    result = Figures(name=name, unit=unit, ops=len(values))
    if values:
        result.p50_ms = percentile(values, 0.50) * 1000
        result.p90_ms = percentile(values, 0.90) * 1000
        result.p99_ms = percentile(values, 0.99) * 1000
        result.max_ms = values[-1] * 1000
    if window is not None and window.seconds > 0:
        result.throughput = len(values) / window.seconds
        result.client_cpu_percent = 100 * window.client_cpu / window.seconds
        if not math.isnan(window.server_cpu):
            result.server_cpu_percent = 100 * window.server_cpu / window.seconds
            if values:
                result.server_cpu_ms_per_op = 1000 * window.server_cpu / len(values)
    if server is not None and server.alive():
        result.peak_rss = server.peak_rss()
    result.errors = recorder.error_count
    result.error_samples = list(recorder.errors)
    return result


Check = Callable[[Response], str | None]


async def closed_loop(
    name: str,
    server: ProcessStats | None,
    host: str,
    port: int,
    request: bytes | Callable[[int], bytes],
    check: Check,
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    op_timeout: float = 30.0,
    setup: Callable[[], Awaitable[None]] | None = None,
) -> Figures:
    """C keep-alive connections, each sending the request again as soon as it is answered."""
    recorder = Recorder()
    stop = trio.Event()
    make = (lambda _: request) if isinstance(request, bytes) else request

    async def worker(index: int) -> None:
        connection: H1Connection | None = None
        sequence = 0
        while not stop.is_set():
            try:
                with trio.fail_after(op_timeout):
                    if connection is None or connection.closed:
                        connection = await H1Connection.open(host, port)
                    data = make(index * 1_000_000 + sequence)
                    sequence += 1
                    started = time.perf_counter()
                    response = await connection.request(data)
                    finished = time.perf_counter()
                problem = check(response)
                if problem:
                    recorder.error(problem)
                else:
                    recorder.done(started, finished)
            except (OSError, HttpError, trio.TooSlowError, ValueError) as error:
                recorder.error(f"{type(error).__name__}: {error}")
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    if setup is not None:
        await setup()
    async with trio.open_nursery() as nursery:
        for index in range(concurrency):
            nursery.start_soon(worker, index)
        window = await measure_window([recorder], server, warmup, duration)
        stop.set()
    return figures(name, recorder, window, server)


def expect_status(status: int) -> Check:
    def check(response: Response) -> str | None:
        if response.status != status:
            return f"status {response.status} (expected {status}): {response.body[:200]!r}"
        return None

    return check
