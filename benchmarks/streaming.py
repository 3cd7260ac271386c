"""Scenario 5: a runtime streams a large result to one sync caller through the emulator.

Owns the 1 GiB run (SHA-256 checked, throughput, peak RSS growth, chunk delay at full speed)
and the paced run (one chunk in flight: the emulator's forwarding delay per chunk).
Imports trio and the benchmark's own modules.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass

import trio

from benchmarks.common import Context, leaves, merge_errors
from benchmarks.h1 import H1Connection, encode_request
from benchmarks.jobplane import (
    EXECUTE,
    FAILURES,
    BenchError,
    H1Session,
    Target,
    bearer_headers,
    execute_body,
    parse_job,
)
from benchmarks.loadgen import Figures, Recorder, figures, percentile
from benchmarks.procs import self_cpu_seconds

MiB = 1024 * 1024
KiB = 1024

# --- scenario 5: streaming --------------------------------------------------------------------


def _chunk(index: int, pool: bytes, size: int) -> bytes:
    offset = (index * 7919) % (len(pool) - size)
    return index.to_bytes(8, "big") + pool[offset + 8 : offset + size]


async def streaming(ctx: Context) -> Figures:
    size = ctx.sizes.chunk
    chunks = ctx.sizes.stream_bytes // size
    name = f"5. stream {ctx.sizes.stream_bytes // MiB} MiB in {size // KiB} KiB chunks"
    ctx.log(f"  {name}")
    pool = random.Random(7).randbytes(1 * MiB)
    expected = hashlib.sha256()
    for index in range(chunks):
        expected.update(_chunk(index, pool, size))
    async with ctx.fresh() as target:
        server = target.server
        errors = Recorder()
        limit = max(ctx.sizes.op_timeout, chunks * size / (20 * MiB))
        main = await _stream_once(target, pool, chunks, size, errors, limit, paced=False)
        if main.digest != expected.hexdigest():
            errors.error("SHA-256 of the received stream differs from what the runtime sent")
        if main.bytes != chunks * size:
            errors.error(f"received {main.bytes} bytes of {chunks * size}")
        paced = await _stream_once(
            target, pool, ctx.sizes.paced_chunks, size, errors, ctx.sizes.op_timeout, paced=True
        )
        recorder = Recorder()
        recorder.measuring = True
        recorder.latencies = paced.delays
        result = figures(name, recorder, None, server, unit="MiB/s")
        result.ops = chunks
        result.throughput = chunks * size / MiB / main.seconds
        if server:
            result.server_cpu_ms_per_op = 1000 * main.server_cpu / chunks
            result.server_cpu_percent = 100 * main.server_cpu / main.seconds
        result.client_cpu_percent = 100 * main.client_cpu / main.seconds
        loaded = sorted(main.delays)
        result.extra.update(
            {
                "SHA-256 verified": main.digest == expected.hexdigest(),
                "RSS before MiB": round(main.rss_before / MiB, 1),
                "peak RSS growth MiB": round((main.peak - main.rss_before) / MiB, 1),
                "latency is": f"chunk delay, runtime send -> caller receive, paced "
                f"({ctx.sizes.paced_chunks} chunks, one in flight)",
                "chunk delay at full speed p50/p99/max ms": [
                    round(1000 * percentile(loaded, 0.5), 2),
                    round(1000 * percentile(loaded, 0.99), 2),
                    round(1000 * loaded[-1], 2) if loaded else None,
                ],
                "cpu ms per op is": "per 64 KiB chunk",
            }
        )
        merge_errors(result, errors)
        return result


@dataclass
class StreamOutcome:
    digest: str
    bytes: int
    seconds: float
    delays: list[float]
    rss_before: int
    peak: int
    server_cpu: float
    client_cpu: float


async def _stream_once(
    target: Target,
    pool: bytes,
    chunks: int,
    size: int,
    errors: Recorder,
    limit: float,
    *,
    paced: bool,
) -> StreamOutcome:
    """One job whose result the runtime streams (chunked upload) to one sync caller."""
    server = target.server
    ref = target.runtime(0)
    sent_at = [0.0] * chunks
    received_at = [0.0] * chunks
    digest = hashlib.sha256()
    received = [0]
    arrived = [trio.Event() for _ in range(chunks)] if paced else []

    async def runtime() -> None:
        session = H1Session(target.host, target.port)
        auth = [("Module-Auth-Token", ref.token)]
        while True:
            status, body = await session("GET", ref.job_path(), auth, None)
            if status == 200:
                break
            if status != 204:
                raise BenchError(f"poll answered {status}: {body[:200]!r}")
        session.close()
        job_id, _tag = parse_job(body)
        connection = await H1Connection.open(target.host, target.port)
        head = encode_request(
            "POST",
            ref.result_path(job_id),
            target.authority,
            [*auth, ("Content-Type", "application/octet-stream")],
            chunked=True,
        )
        await connection.send(head)
        frame = f"{size:x}\r\n".encode()
        for index in range(chunks):
            data = frame + _chunk(index, pool, size) + b"\r\n"
            sent_at[index] = time.perf_counter()
            await connection.send(data)
            if paced:
                await arrived[index].wait()
        await connection.send(b"0\r\n\r\n")
        response = await connection.read_response()
        connection.close()
        if response.status != 204:
            errors.error(f"streamed result upload answered {response.status}")

    def sink(data: bytes) -> None:
        digest.update(data)
        before = received[0]
        received[0] = after = before + len(data)
        now = time.perf_counter()
        for index in range(before // size, min(after // size, chunks)):
            received_at[index] = now
            if paced:
                arrived[index].set()

    async def caller() -> None:
        connection = await H1Connection.open(target.host, target.port)
        await connection.send(
            encode_request(
                "POST",
                EXECUTE,
                target.authority,
                bearer_headers(target),
                execute_body(ref.deployed_app, "stream"),
            )
        )
        head = await connection.read_head()
        if head.status != 200:
            raise BenchError(f"streaming execute answered {head.status}")
        await connection.read_body(head, sink)
        connection.close()

    if server:
        server.reset_peak_rss()
    rss_before = server.rss() if server else 0
    cpu0 = server.cpu_seconds() if server else math.nan
    self0 = self_cpu_seconds()
    try:
        with trio.fail_after(limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller)
                nursery.start_soon(runtime)
    except (trio.TooSlowError, *FAILURES) as error:
        sent = sum(1 for moment in sent_at if moment)
        errors.error(
            f"stream{' (paced)' if paced else ''}: {type(error).__name__}: {error} "
            f"(runtime sent {sent} of {chunks} chunks, caller received {received[0]} bytes)"
        )
    except BaseExceptionGroup as group:
        for leaf in leaves(group):
            errors.error(f"stream: {type(leaf).__name__}: {leaf}")
    seconds = (max(received_at) - sent_at[0]) if received[0] else math.nan
    return StreamOutcome(
        digest=digest.hexdigest(),
        bytes=received[0],
        seconds=seconds,
        delays=[r - s for s, r in zip(sent_at, received_at, strict=True) if r],
        rss_before=rss_before,
        peak=server.peak_rss() if server else 0,
        server_cpu=(server.cpu_seconds() - cpu0) if server else math.nan,
        client_cpu=self_cpu_seconds() - self0,
    )
