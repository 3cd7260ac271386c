"""Hostile clients against a running emulator: `python benchmarks/attacks.py [--seconds N]
[--http-server emulator|hypercorn]`.

Owns the attack figures of issue 16: for each attack, one attacker (HTTP/2 frame floods, rapid
reset, a client that never reads) runs for `--seconds` while a well-behaved client on its own
connection asks `/_emulate/health` one request at a time. Printed per attack: the good client's
p50 / p99 / max latency and time-outs, how the attacker was stopped (GOAWAY code, connection
closed, reconnections), and the server's RSS before, at the end of and 3 s after the attack.
Figures only, no pass/fail: the machine is shared, so compare runs made together.
"""

from __future__ import annotations

import argparse
import math
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hpack
import trio

from benchmarks.jobplane import H1Session
from benchmarks.procs import BENCH_DIR, emulator_server, pin_load_generator, raise_fd_limit

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 2, 3, 4, 6, 7, 8
GOOD_TIMEOUT = 5.0


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes((kind, flags))
    return head + struct.pack(">I", stream_id) + payload


def request_headers(encoder: hpack.Encoder, stream_id: int, end: bool) -> bytes:
    block = encoder.encode(
        [
            (":method", "GET"),
            (":path", "/_emulate/health"),
            (":scheme", "http"),
            (":authority", "a"),
        ]
    )
    return frame(HEADERS, 0x4 | (0x1 if end else 0), stream_id, block)


def flood(make: Callable[[int], bytes]) -> Callable[[hpack.Encoder], bytes]:
    """A batch of 1,000 frames after an open stream (so DATA frames have somewhere to go)."""

    def batch(encoder: hpack.Encoder) -> bytes:
        return b"".join(make(i) for i in range(1000))

    return batch


def rapid_reset(encoder: hpack.Encoder) -> bytes:
    """1,000 HEADERS + RST_STREAM pairs on fresh stream ids."""
    out = []
    for _ in range(1000):
        stream_id = rapid_reset.next_id  # type: ignore[attr-defined]
        rapid_reset.next_id += 2  # type: ignore[attr-defined]
        out.append(request_headers(encoder, stream_id, True))
        out.append(frame(RST_STREAM, 0, stream_id, struct.pack(">I", 8)))
    return b"".join(out)


rapid_reset.next_id = 3  # type: ignore[attr-defined]

ATTACKS: dict[str, Callable[[hpack.Encoder], bytes]] = {
    "PING flood": flood(lambda i: frame(PING, 0, 0, struct.pack(">Q", i))),
    "SETTINGS flood": flood(lambda i: frame(SETTINGS, 0, 0)),
    "empty DATA flood": flood(lambda i: frame(DATA, 0, 1)),
    "WINDOW_UPDATE flood": flood(lambda i: frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1))),
    "PRIORITY flood": flood(lambda i: frame(PRIORITY, 0, 3, struct.pack(">IB", 0, 15))),
    "rapid reset": rapid_reset,
}


class Outcome:
    def __init__(self) -> None:
        self.connections = 0
        self.goaways: dict[int, int] = {}
        self.sent = 0


async def attacker(port: int, make: Callable[[hpack.Encoder], bytes], outcome: Outcome) -> None:
    """Flood, never reading except to notice GOAWAY; reconnect whenever the server closes."""
    while True:
        outcome.connections += 1
        rapid_reset.next_id = 3  # type: ignore[attr-defined]
        encoder = hpack.Encoder()
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_goaway, stream, outcome, nursery.cancel_scope)
                try:
                    await stream.send_all(PREFACE + frame(SETTINGS, 0, 0))
                    await stream.send_all(request_headers(encoder, 1, False))
                    while True:
                        data = make(encoder)
                        await stream.send_all(data)
                        outcome.sent += len(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)


async def _watch_goaway(
    stream: trio.SocketStream, outcome: Outcome, done: trio.CancelScope
) -> None:
    buffer = b""
    try:
        while data := await stream.receive_some(65536):
            buffer += data
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                if buffer[3] == GOAWAY:
                    code = int.from_bytes(buffer[13:17], "big")
                    outcome.goaways[code] = outcome.goaways.get(code, 0) + 1
                buffer = buffer[9 + length :]
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


async def never_reads(port: int, make: object, outcome: Outcome) -> None:
    """Many streams asking for answers, never reading them nor opening the window."""
    encoder = hpack.Encoder()
    while True:
        outcome.connections += 1
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            # Initial stream window 0: every answer waits for window that never comes.
            await stream.send_all(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 0)))
            await stream.send_all(
                b"".join(request_headers(encoder, 2 * i + 1, True) for i in range(999))
            )
            await trio.sleep_forever()
        finally:
            await trio.aclose_forcefully(stream)


async def good_client(port: int, latencies: list[float], timeouts: list[int]) -> None:
    session = H1Session("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            with trio.move_on_after(GOOD_TIMEOUT) as scope:
                status, _ = await session("GET", "/_emulate/health", [], None)
                if status != 200:
                    raise RuntimeError(f"health answered {status}")
            if scope.cancelled_caught:
                timeouts[0] += 1
                session.close()
            else:
                latencies.append(time.perf_counter() - started)
            # One request every 10 ms: a steady, light, well-behaved client.
            await trio.sleep(0.01)
    finally:
        session.close()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_attack(name: str, seconds: float, server_args: list[str]) -> str:
    server = await trio.to_thread.run_sync(emulator_server, BENCH_DIR / "seed.yaml", server_args)
    try:
        port = server.port
        rss_before = server.rss()
        latencies: list[float] = []
        timeouts = [0]
        outcome = Outcome()
        attack = never_reads if name == "never reads (999 streams, no window)" else attacker
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good_client, port, latencies, timeouts)
            await trio.sleep(1.0)  # the good client's quiet figures first
            quiet = len(latencies)
            nursery.start_soon(attack, port, ATTACKS.get(name), outcome)
            await trio.sleep(seconds)
            rss_during = server.rss()
            nursery.cancel_scope.cancel()
        await trio.sleep(3.0)
        rss_after = server.rss()
        before = latencies[:quiet]
        during = latencies[quiet:]
        codes = ", ".join(f"{code:#x} x{count}" for code, count in sorted(outcome.goaways.items()))
        return (
            f"| {name} | {1000 * percentile(before, 0.5):.1f} / "
            f"{1000 * percentile(before, 0.99):.1f} "
            f"| {len(during)} | {1000 * percentile(during, 0.5):.1f} | "
            f"{1000 * percentile(during, 0.99):.1f} | {1000 * max(during, default=math.nan):.1f} | "
            f"{timeouts[0]} | {outcome.connections} | {codes or '-'} | "
            f"{rss_before / 2**20:.0f} / {rss_during / 2**20:.0f} / {rss_after / 2**20:.0f} |"
        )
    finally:
        await trio.to_thread.run_sync(server.stop)


async def main(seconds: float, server_args: list[str], only: list[str]) -> None:
    print(
        "| attack | quiet p50 / p99 ms | good requests | p50 ms | p99 ms | max ms | time-outs "
        "| attacker connections | GOAWAY codes | RSS MiB before / end / 3 s after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in [*ATTACKS, "never reads (999 streams, no window)"]:
        if only and not any(word.lower() in name.lower() for word in only):
            continue
        print(await run_attack(name, seconds, server_args), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--http-server", default="emulator", choices=["emulator", "hypercorn"])
    parser.add_argument("--only", default="", help="comma-separated words of attack names")
    args = parser.parse_args()
    print(f"attacks: {pin_load_generator()}; open files {raise_fd_limit()}")
    only = [word for word in args.only.split(",") if word]
    trio.run(main, args.seconds, ["--http-server", args.http_server], only)
