"""Server processes under measurement: start pinned to a core, find the port, read /proc.

Owns starting the emulator or the calibration server as a separate process (`taskset -c 0`),
reading its port from its banner, its CPU time and RSS from /proc/PID/{stat,status},
resetting its peak RSS, and stopping it. Also pins the load generator itself to another core
and raises its file-descriptor limit. Standard library only (no trio).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PORT_LINE = re.compile(r"^HTTP:\s+http://([0-9.]+):(\d+)", re.MULTILINE)
SERVER_CORE = 0
LOAD_CORE = 1
# Taken before the load generator pins itself, so children can still go to the server core.
ORIGINAL_CORES = frozenset(os.sched_getaffinity(0))


def cores() -> int:
    return len(ORIGINAL_CORES)


def pin_load_generator() -> str:
    """Pin this process to the load core (when there are two); returns what was done."""
    available = sorted(ORIGINAL_CORES)
    if len(available) < 2 or LOAD_CORE not in available or SERVER_CORE not in available:
        return f"not pinned (cores available: {available})"
    os.sched_setaffinity(0, {LOAD_CORE})
    return f"load generator on core {LOAD_CORE}, server on core {SERVER_CORE}"


def raise_fd_limit(wanted: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ProcessStats:
    """CPU time and memory of a process, read from /proc (a server we started, or attached)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    @property
    def pid(self) -> int:
        return self._pid

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process (all its threads)."""
        with open(f"/proc/{self.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def reset_peak_rss(self) -> None:
        """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass

    def alive(self) -> bool:
        return os.path.exists(f"/proc/{self.pid}")


class ServerProcess(ProcessStats):
    """A server started in its own process, pinned to the server core."""

    def __init__(self, argv: Sequence[str], *, name: str, start_timeout: float = 30.0) -> None:
        self.name = name
        pin = ["taskset", "-c", str(SERVER_CORE)] if can_pin() else []
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [*pin, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            text=True,
            preexec_fn=_raise_child_fd_limit,
        )
        super().__init__(self.proc.pid)
        self.output: list[str] = []
        self.stderr: list[str] = []
        self.host, self.port = self._wait_for_port(start_timeout)
        self.url = f"http://{self.host}:{self.port}"
        threading.Thread(
            target=self._drain, args=(self.proc.stdout, self.output), daemon=True
        ).start()

    def _wait_for_port(self, timeout: float) -> tuple[str, int]:
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        threading.Thread(
            target=self._drain, args=(self.proc.stderr, self.stderr), daemon=True
        ).start()
        deadline = time.monotonic() + timeout
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            for line in self.proc.stdout:
                self.output.append(line)
                match = PORT_LINE.search(line)
                if match:
                    return match.group(1), int(match.group(2))
                if time.monotonic() > deadline:
                    break
        finally:
            timer.cancel()
        self.stop()
        raise RuntimeError(
            f"{self.name} did not print its port; output:\n{''.join(self.output)}"
            f"{''.join(self.stderr[-20:])}"
        )

    @staticmethod
    def _drain(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            if len(sink) < 2000:
                sink.append(line)

    def start_profiler(self, output: Path) -> None:
        """Sample this process with py-spy (collapsed stacks) until `stop()`; needs py-spy."""
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.profiler = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop_profiler(self) -> None:
        profiler = getattr(self, "profiler", None)
        if profiler is not None and profiler.poll() is None:
            profiler.send_signal(signal.SIGINT)
            try:
                profiler.wait(15)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait(5)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_profiler()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def can_pin() -> bool:
    return shutil.which("taskset") is not None and {SERVER_CORE, LOAD_CORE} <= ORIGINAL_CORES


def _raise_child_fd_limit() -> None:
    raise_fd_limit()


def baseline_server() -> ServerProcess:
    return ServerProcess(
        [sys.executable, str(BENCH_DIR / "baseline_h11.py")], name="baseline server"
    )


def emulator_server(seed: Path, extra: Sequence[str] = ()) -> ServerProcess:
    return ServerProcess(
        [
            sys.executable,
            "-m",
            "emulator",
            "serve",
            "--port",
            "0",
            "--no-tls",
            "--seed",
            str(seed),
            "--log-level",
            "warning",
            *extra,
        ],
        name="emulator",
    )
