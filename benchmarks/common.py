"""What every scenario shares: run sizes, the per-scenario emulator, and error bookkeeping.

Owns `Sizes` (the full and quick runs), `Context` (a freshly started emulator per scenario, or
the external `--target`, optionally sampled by py-spy), `merge_errors` and `leaves`.
Imports trio and the benchmark's own modules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from benchmarks.jobplane import BenchError, RuntimeRef, Target
from benchmarks.loadgen import Figures, Recorder
from benchmarks.procs import emulator_server

MiB = 1024 * 1024
KiB = 1024


@dataclass(frozen=True)
class Sizes:
    warmup: float
    duration: float
    sync_configs: tuple[tuple[int, int], ...]
    async_configs: tuple[tuple[int, int], ...]
    waiting: int
    stream_bytes: int
    paced_chunks: int
    idle_runtimes: int
    idle_seconds: float
    plain_concurrency: int
    op_timeout: float
    chunk: int = 64 * KiB


FULL = Sizes(
    warmup=1.5,
    duration=8.0,
    sync_configs=((1, 1), (8, 64), (32, 512)),
    async_configs=((8, 64),),
    waiting=10_000,
    stream_bytes=1024 * MiB,
    paced_chunks=1000,
    idle_runtimes=2000,
    idle_seconds=10.0,
    plain_concurrency=64,
    op_timeout=60.0,
)
QUICK = Sizes(
    warmup=0.1,
    duration=0.5,
    sync_configs=((1, 1), (4, 16)),
    async_configs=((2, 8),),
    waiting=200,
    stream_bytes=8 * MiB,
    paced_chunks=50,
    idle_runtimes=50,
    idle_seconds=1.0,
    plain_concurrency=8,
    op_timeout=15.0,
)


@dataclass
class Context:
    sizes: Sizes
    seed: Path
    external: Target | None = None
    log: Callable[[str], None] = print
    notes: list[str] = field(default_factory=list)
    # When set, every fresh emulator is sampled by py-spy into this folder.
    profile_dir: Path | None = None
    label: str = "emulator"
    profiles: int = 0

    @asynccontextmanager
    async def fresh(self) -> AsyncIterator[Target]:
        """A freshly started emulator (pinned, production settings), or the external target."""
        if self.external is not None:
            yield self.external
            return
        server = await trio.to_thread.run_sync(emulator_server, self.seed)
        if self.profile_dir is not None:
            self.profiles += 1
            slug = "".join(ch if ch.isalnum() else "-" for ch in self.label).strip("-")
            server.start_profiler(self.profile_dir / f"{self.profiles:02d}-{slug}.txt")
        try:
            yield Target(
                host=server.host,
                port=server.port,
                bearer="bench-token",
                runtimes=[
                    RuntimeRef(
                        f"bench-rt-{i:02d}",
                        f"bench-module-token-{i:02d}",
                        f"ri.foundry.main.deployed-app.bench-{i:02d}",
                    )
                    for i in range(32)
                ],
                server=server,
            )
            if not server.alive():
                raise BenchError(f"the emulator exited: {''.join(server.stderr[-20:])}")
        finally:
            await trio.to_thread.run_sync(server.stop)


def merge_errors(result: Figures, other: Recorder) -> None:
    result.errors += other.error_count
    result.error_samples += other.errors[: max(0, 20 - len(result.error_samples))]


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            found += leaves(inner)
        else:
            found.append(inner)
    return found
