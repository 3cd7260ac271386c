"""ConnectSoft StreamHealth at scale: `python benchmarks/connectsoft_streams.py [--quick]`.

Starts the emulator (ConnectSoft only, h2c) on a generated seed of 200 environments with 20
services each, opens one RuntimeHealth/StreamHealth call per service (4,000 by default) spread
over HTTP/2 connections of at most 500 streams, then changes every service's health once
through the control route and measures, per stream, the time from sending that change to
receiving its update. Prints the p50/p99/max delivery latency and the emulator's resident
memory per open stream (RSS growth while the streams opened, divided by their number).
`--quick` uses 10 environments. Exits non-zero if any stream misses its update.

A standalone script (not part of run.py's suite): it talks gRPC framing over the h2 library
itself, so 4,000 streams cost the load generator little.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import trio

STREAMS_PER_CONNECTION = 500
SERVICES_PER_ENVIRONMENT = 20
PATH = "/connectsoft.runtime.v1.RuntimeHealth/StreamHealth"


def seed_yaml(environments: int) -> str:
    lines = [
        "connectsoft:",
        "  clients:",
        "    - {client_id: bench, client_secret: bench-secret, tenants: [bench]}",
        "  environments:",
    ]
    for e in range(environments):
        lines += [
            f"    - environment_id: env-{e:08x}",
            "      tenant_id: bench",
            "      project_id: proj-bench",
            f"      name: bench-{e}",
            "      services:",
        ]
        lines += [
            f"        - {{service_id: svc-{s}, image: acr.io/svc-{s}:1.0.0}}"
            for s in range(SERVICES_PER_ENVIRONMENT)
        ]
    return "\n".join(lines) + "\n"


def string_field(number: int, text: str) -> bytes:
    data = text.encode()
    return bytes([(number << 3) | 2, len(data)]) + data


def frame(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Progress:
    """How many streams have their first (current health) and second (the change) message;
    an event fires when all of them have."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.counts = [0, 0]
        self.reached = [trio.Event(), trio.Event()]

    def arrived(self, nth: int) -> None:
        if nth < 2:
            self.counts[nth] += 1
            if self.counts[nth] == self.total:
                self.reached[nth].set()


class StreamClient:
    """One h2c connection carrying many StreamHealth calls; records when DATA arrives."""

    def __init__(self, port: int, token: str, progress: Progress) -> None:
        self.progress = progress
        self.port = port
        self.token = token.encode()
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lock = trio.Lock()
        # stream id -> arrival times of its messages (perf_counter)
        self.arrivals: dict[int, list[float]] = {}
        self.keys: dict[int, str] = {}

    async def start(self, nursery: trio.Nursery) -> None:
        await self.sock.connect(("127.0.0.1", self.port))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**24})
        self.conn.increment_flow_control_window(2**30)
        await self.flush()
        nursery.start_soon(self.read_loop)

    async def flush(self) -> None:
        async with self.lock:
            data = self.conn.data_to_send()
            while data:
                sent = await self.sock.send(data)
                data = data[sent:]

    async def open_stream(self, environment_id: str, service_id: str) -> None:
        stream_id = self.conn.get_next_available_stream_id()
        body = frame(string_field(1, service_id) + string_field(2, environment_id))
        self.arrivals[stream_id] = []
        self.keys[stream_id] = f"{environment_id}/{service_id}"
        self.conn.send_headers(
            stream_id,
            [
                (b":method", b"POST"),
                (b":path", PATH.encode()),
                (b":scheme", b"http"),
                (b":authority", f"127.0.0.1:{self.port}".encode()),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"authorization", b"Bearer " + self.token),
            ],
        )
        self.conn.send_data(stream_id, body, end_stream=True)
        await self.flush()

    async def read_loop(self) -> None:
        while True:
            data = await self.sock.recv(1024 * 1024)
            if not data:
                return
            now = time.perf_counter()
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    if event.data and event.stream_id in self.arrivals:
                        times = self.arrivals[event.stream_id]
                        times.append(now)
                        self.progress.arrived(len(times) - 1)
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            await self.flush()


async def run(environments: int) -> int:
    streams = environments * SERVICES_PER_ENVIRONMENT
    workdir = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    seed = workdir / "seed.yaml"
    seed.write_text(seed_yaml(environments))
    endpoints = workdir / "endpoints.json"
    progress = Progress(streams)
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "emulator",
            "serve",
            "--seed",
            str(seed),
            "--services",
            "connectsoft",
            "--port",
            "connectsoft=0",
            "--no-tls",
            "--state-dir",
            str(workdir / "state"),
            "--endpoints-file",
            str(endpoints),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(60):
            # The banner's first line says the listeners are up (and the endpoints written).
            output = b""
            while b"is ready" not in output:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("the emulator exited before it was ready")
                output += chunk
        base = json.loads(endpoints.read_text())["services"]["connectsoft"]["http"]
        port = int(base.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            token = (
                await http.post(
                    "/connect/token",
                    data={"grant_type": "client_credentials"},
                    auth=("bench", "bench-secret"),
                )
            ).json()["access_token"]
            before = rss_kib(process.pid)
            async with trio.open_nursery() as nursery:
                clients: list[StreamClient] = []
                keys = [
                    (f"env-{e:08x}", f"svc-{s}")
                    for e in range(environments)
                    for s in range(SERVICES_PER_ENVIRONMENT)
                ]
                for index, (env_id, service_id) in enumerate(keys):
                    if index % STREAMS_PER_CONNECTION == 0:
                        client = StreamClient(port, token, progress)
                        await client.start(nursery)
                        clients.append(client)
                    await clients[-1].open_stream(env_id, service_id)
                # Every stream has its first message (the current health) before measuring.
                with trio.fail_after(120):
                    await progress.reached[0].wait()
                opened = rss_kib(process.pid)
                sent_at: dict[str, float] = {}
                for env_id, service_id in keys:
                    sent_at[f"{env_id}/{service_id}"] = time.perf_counter()
                    await http.post(
                        "/_emulate/connectsoft/faults/unhealthy",
                        json={"environmentId": env_id, "serviceId": service_id},
                    )
                with trio.move_on_after(60):
                    await progress.reached[1].wait()
                latencies = [
                    (times[1] - sent_at[client.keys[stream_id]]) * 1000
                    for client in clients
                    for stream_id, times in client.arrivals.items()
                    if len(times) >= 2
                ]
                nursery.cancel_scope.cancel()
        missed = streams - len(latencies)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0
        print(f"streams open:          {streams}")
        print(f"memory per stream:     {(opened - before) / streams:.1f} KiB (RSS growth)")
        if latencies:
            print(f"update latency p50:    {statistics.median(latencies):.2f} ms")
            print(f"update latency p99:    {p99:.2f} ms")
            print(f"update latency max:    {latencies[-1]:.2f} ms")
        print(f"missed updates:        {missed}")
        return 1 if missed else 0
    finally:
        process.terminate()
        with trio.move_on_after(30):
            await process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 environments instead of 200")
    parser.add_argument("--environments", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return trio.run(run, 10 if args.quick else args.environments)


if __name__ == "__main__":
    sys.exit(main())
