"""The soak test's load: what happens to each of its jobs, the simulated modules and callers that
carry it out, and a lean keep-alive HTTP/1.1 client on raw trio sockets for them.

Owns the plan (`Plan`, `make_plans`: runtime, sync or async, early leaving, vanishing uploads and
duplicate results per job, the same in every process), the results the modules send
(`sim_result`, `py_result`), the HTTP client (`Connection`, `Cut`, `request`, `send_partial`),
the simulated pollers and callers (`sim_poller`, `submitter`) and `Wire`, what they sent and
received. Run as a script (`python soakload.py HOST PORT JOBS`), it is the load generator the
soak test starts in its own process, so that the clients' CPU does not share a core with the
emulator under test: it prints `submitted` once every job was handed over, waits for `stop` on
its standard input, stops its pollers and prints its `Wire` as one JSON line.

The client parses only what the soak test reads; httpx costs more CPU per request than the
emulator itself. Imports only trio, attrs and the standard library.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import socket
import sys
from collections import Counter
from typing import Any

import attrs
import trio

JOBS_DEFAULT = 20_000
RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
SUBMIT = CONTOUR + "/deployed-apps/jobs"
JANE = {"Authorization": "Bearer soak-token", "Content-Type": "application/json"}
PY_RUNTIMES = ["py-0", "py-1"]
SIM_RUNTIMES = [f"sim-{i}" for i in range(2, 8)]
ALL_RUNTIMES = PY_RUNTIMES + SIM_RUNTIMES
# Python module processes are numbered by generation: "1" first, "2" the one started after the
# first py-0 was killed.
GENERATIONS = ("1", "2")
# The real modules take about 1 job in 16: each does some 50 jobs/s at most and costs the
# emulator twice what a simulated one does (HTTPS); the simulated pollers take the bulk.
PY_SHARE = 1 / 16
POLLERS_PER_SIM = 6
SUBMITTERS = 64


def app(runtime: str) -> str:
    return f"ri.foundry.main.deployed-app.{runtime}"


def module_auth(runtime: str) -> dict[str, str]:
    return {"Module-Auth-Token": f"token-{runtime}"}


# The Python module the real library serves. The process generation is part of every answer, so
# a re-queued job's result shows which run produced it.
MODULE = """
import os

from compute_modules.annotations import function

GENERATION = os.environ["SOAK_GENERATION"]


@function
def echo(context, event):
    return {"i": event["i"], "g": GENERATION, "s": "y" * (event["i"] % 13)}
"""


def py_result(tag: int, generation: str) -> bytes:
    """What the Python library sends for `echo`: json.dumps of the return value."""
    return json.dumps({"i": tag, "g": generation, "s": "y" * (tag % 13)}).encode("utf-8")


def sim_result(tag: int) -> bytes:
    return hashlib.sha256(str(tag).encode()).hexdigest().encode() * (1 + tag % 4)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@attrs.frozen
class Plan:
    """What happens to one job (its tag is the `i` of its query)."""

    tag: int
    runtime: str
    sync: bool
    # A synchronous caller that stops waiting (closes its connection) after this long.
    leave_after: float = math.inf
    # Simulated runtimes: vanish half way through the first upload, then send it whole.
    vanish: bool = False
    # Simulated runtimes: post a second, different result after the first.
    duplicate: bool = False


def make_plans(count: int) -> list[Plan]:
    rng = random.Random(20_000)
    plans = []
    for tag in range(count):
        if rng.random() < PY_SHARE:
            runtime = PY_RUNTIMES[rng.randrange(2)]
        else:
            runtime = SIM_RUNTIMES[rng.randrange(len(SIM_RUNTIMES))]
        sync = rng.random() < 0.5
        leave = sync and rng.random() < 1 / 40
        simulated = runtime in SIM_RUNTIMES
        plans.append(
            Plan(
                tag=tag,
                runtime=runtime,
                sync=sync,
                leave_after=rng.choice((0.0005, 0.002, 0.01, 0.05, 0.2)) if leave else math.inf,
                vanish=simulated and rng.random() < 1 / 200,
                duplicate=simulated and rng.random() < 1 / 50,
            )
        )
    return plans


# The HTTP client ------------------------------------------------------------------------------

RECEIVE_SIZE = 65536


class Cut(Exception):
    """The connection ended (or broke the protocol) before the answer was complete."""


@attrs.frozen
class Reply:
    status: int
    head: bytes
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_name(self) -> str | None:
        """The `error` field of a compute-module family error body, if it is one."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value.get("error") if isinstance(value, dict) else None


def request(
    method: str,
    path: str,
    authority: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> bytes:
    """The bytes of one keep-alive request (with a Content-Length when it has a body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _open_socket(host: str, port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class Connection:
    """One keep-alive connection, opened on first use and again after it was closed.

    Anything that interrupts a request (an error, a cancellation) closes the connection, so a
    half-read answer never leaks into the next request.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: trio.socket.SocketType | None = None
        self.buffer = bytearray()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buffer.clear()

    async def send(self, data: bytes) -> Reply:
        if self.sock is None:
            self.sock = await _open_socket(self.host, self.port)
        try:
            view = memoryview(data)
            while view:
                sent = await self.sock.send(view)
                view = view[sent:]
            return await self._answer()
        except BaseException:
            self.close()
            raise

    async def _fill(self) -> None:
        assert self.sock is not None
        data = await self.sock.recv(RECEIVE_SIZE)
        if not data:
            raise Cut("connection closed before the answer was complete")
        self.buffer += data

    async def _answer(self) -> Reply:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                await self._fill()
                end = buffer.find(b"\r\n\r\n")
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            if not head.startswith(b"HTTP/1.") or len(head) < 12:
                raise Cut(f"not an HTTP/1.1 answer: {head[:40]!r}")
            status = int(head[9:12])
            if status >= 200:
                break
        lower = head.lower()
        if status in (204, 304):
            body = b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked()
        else:
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 17)
                length = int(lower[at + 17 : stop if stop >= 0 else None])
                while len(buffer) < length:
                    await self._fill()
                body = bytes(buffer[:length])
                del buffer[:length]
            else:
                body = await self._until_closed()
        if b"\r\nconnection: close" in lower:
            self.close()
        return Reply(status, head, body)

    async def _line(self) -> bytes:
        buffer = self.buffer
        end = buffer.find(b"\r\n")
        while end < 0:
            await self._fill()
            end = buffer.find(b"\r\n")
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        return line

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        buffer = self.buffer
        while True:
            line = await self._line()
            try:
                size = int(line.split(b";", 1)[0], 16)
            except ValueError:
                raise Cut(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while await self._line():
                    pass  # trailers
                return b"".join(parts)
            while len(buffer) < size + 2:
                await self._fill()
            if buffer[size : size + 2] != b"\r\n":
                raise Cut("a chunk is not followed by CRLF")
            parts.append(bytes(buffer[:size]))
            del buffer[: size + 2]

    async def _until_closed(self) -> bytes:
        assert self.sock is not None
        while True:
            data = await self.sock.recv(RECEIVE_SIZE)
            if not data:
                body = bytes(self.buffer)
                self.close()
                return body
            self.buffer += data


async def send_partial(host: str, port: int, data: bytes, keep: int) -> None:
    """Send the first `keep` bytes of a request, then close the connection: a client that
    vanishes mid-upload."""
    sock = await _open_socket(host, port)
    try:
        view = memoryview(data)[:keep]
        while view:
            sent = await sock.send(view)
            view = view[sent:]
    finally:
        sock.close()


# The load ---------------------------------------------------------------------------------------


@attrs.frozen
class Target:
    host: str
    port: int

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@attrs.define
class Wire:
    """What the load's clients sent and received."""

    # Simulated pollers: how often each job id was handed to one of them.
    received: Counter[str] = attrs.field(factory=Counter)
    # Simulated pollers: SHA-256 of the first complete upload the emulator accepted, by job id.
    sent: dict[str, str] = attrs.field(factory=dict)
    vanished: set[int] = attrs.field(factory=set)
    duplicates: list[tuple[str, int]] = attrs.field(factory=list)
    retried_uploads: int = 0
    # Synchronous callers: tag -> status (or "cut", "left") and which module generation's
    # answer the body is ("sim", "1", "2"; "wrong" for none).
    sync_outcomes: dict[int, tuple[int | str, str | None]] = attrs.field(factory=dict)
    # Asynchronous submits: tag -> job id in the answer.
    async_ids: dict[int, str] = attrs.field(factory=dict)
    longest_sync_wait: float = 0.0
    longest_poll: float = 0.0
    # From `stop` until the last poller returned.
    pollers_stopped: float = 0.0
    problems: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "received": dict(self.received),
            "sent": self.sent,
            "vanished": sorted(self.vanished),
            "duplicates": self.duplicates,
            "retried_uploads": self.retried_uploads,
            "sync_outcomes": {str(tag): list(o) for tag, o in self.sync_outcomes.items()},
            "async_ids": {str(tag): job_id for tag, job_id in self.async_ids.items()},
            "longest_sync_wait": self.longest_sync_wait,
            "longest_poll": self.longest_poll,
            "pollers_stopped": self.pollers_stopped,
            "problems": self.problems,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Wire:
        return cls(
            received=Counter(data["received"]),
            sent=dict(data["sent"]),
            vanished=set(data["vanished"]),
            duplicates=[(job_id, status) for job_id, status in data["duplicates"]],
            retried_uploads=data["retried_uploads"],
            sync_outcomes={int(tag): (o[0], o[1]) for tag, o in data["sync_outcomes"].items()},
            async_ids={int(tag): job_id for tag, job_id in data["async_ids"].items()},
            longest_sync_wait=data["longest_sync_wait"],
            longest_poll=data["longest_poll"],
            pollers_stopped=data["pollers_stopped"],
            problems=list(data["problems"]),
        )


async def sim_poller(
    target: Target, runtime: str, plans: list[Plan], wire: Wire, stop: trio.Event
) -> None:
    """A simulated module: long-poll, answer at once; vanish or post twice when planned."""
    auth = module_auth(runtime)
    base = f"{RUNTIMES}/{runtime}"
    poll = request("GET", f"{base}/job", target.authority, auth)
    connection = Connection(target.host, target.port)
    try:
        while not stop.is_set():
            started = trio.current_time()
            polled = await connection.send(poll)
            wire.longest_poll = max(wire.longest_poll, trio.current_time() - started)
            if polled.status == 204:
                continue
            if polled.status != 200:
                wire.problems.append(f"{runtime} poll: {polled.status} {polled.body[:200]!r}")
                return
            job = polled.json()["computeModuleJobV1"]
            job_id, tag = job["jobId"], job["query"]["i"]
            wire.received[job_id] += 1
            plan = plans[tag]
            body = sim_result(tag)
            post = request("POST", f"{base}/results/{job_id}", target.authority, auth, body)
            if plan.vanish:
                # Gone with half the body sent: the upload does not count (a caller already
                # streaming it is cut). Then the module comes back and sends it whole.
                wire.vanished.add(tag)
                await send_partial(target.host, target.port, post, len(post) - len(body) // 2)
            posted = await connection.send(post)
            for _ in range(1000):
                # The vanished upload may not have been noticed yet: a clear 409, try again.
                if posted.status != 409 or posted.error_name() != "result_in_progress":
                    break
                wire.retried_uploads += 1
                posted = await connection.send(post)
            if posted.status == 204:
                wire.sent.setdefault(job_id, sha(body))
            else:
                wire.problems.append(f"{runtime} result: {posted.status} {posted.body[:200]!r}")
            if plan.duplicate:
                again = await connection.send(
                    request(
                        "POST",
                        f"{base}/results/{job_id}",
                        target.authority,
                        auth,
                        b"duplicate " + body,
                    )
                )
                wire.duplicates.append((job_id, again.status))
    finally:
        connection.close()


def answered_by(plan: Plan, body: bytes) -> str:
    """Which module generation's answer `body` is ("sim" for a simulated one); "wrong" if none."""
    if plan.runtime in SIM_RUNTIMES:
        return "sim" if body == sim_result(plan.tag) else "wrong"
    for generation in GENERATIONS:
        if body == py_result(plan.tag, generation):
            return generation
    return "wrong"


async def submitter(target: Target, wire: Wire, plans: trio.MemoryReceiveChannel[Plan]) -> None:
    """A caller: synchronous executes (some leave early) and asynchronous submits."""
    connection = Connection(target.host, target.port)
    try:
        async for plan in plans:
            call = {
                "deployedAppRid": app(plan.runtime),
                "queryType": "echo",
                "query": {"i": plan.tag},
            }
            body = json.dumps(call).encode()
            if not plan.sync:
                answer = await connection.send(
                    request("POST", SUBMIT, target.authority, JANE, body)
                )
                if answer.status == 200:
                    wire.async_ids[plan.tag] = answer.json()["id"]
                else:
                    wire.problems.append(f"submit {plan.tag}: {answer.status} {answer.body!r}")
                continue
            started = trio.current_time()
            outcome: tuple[int | str, str | None] = ("left", None)
            with trio.move_on_after(plan.leave_after):
                try:
                    answer = await connection.send(
                        request("POST", EXECUTE, target.authority, JANE, body)
                    )
                except Cut:
                    outcome = ("cut", None)
                else:
                    outcome = (answer.status, None)
                    if answer.status == 200:
                        outcome = (200, answered_by(plan, answer.body))
            wire.longest_sync_wait = max(wire.longest_sync_wait, trio.current_time() - started)
            wire.sync_outcomes[plan.tag] = outcome
    finally:
        connection.close()


async def run_load(target: Target, jobs: int) -> Wire:
    """Every planned job through the emulator, until `stop` arrives on standard input."""
    plans = make_plans(jobs)
    wire = Wire()
    stop = trio.Event()
    async with trio.open_nursery() as pollers:
        for runtime in SIM_RUNTIMES:
            for _ in range(POLLERS_PER_SIM):
                pollers.start_soon(sim_poller, target, runtime, plans, wire, stop)
        async with trio.open_nursery() as callers:
            send, receive = trio.open_memory_channel[Plan](0)
            async with receive:
                for _ in range(SUBMITTERS):
                    callers.start_soon(submitter, target, wire, receive.clone())
            async with send:
                for plan in plans:
                    await send.send(plan)
        print("submitted", flush=True)
        command = await trio.to_thread.run_sync(sys.stdin.readline)
        if command.strip() != "stop":
            wire.problems.append(f"unexpected command {command!r}")
        stop.set()
        stopped = trio.current_time()
    wire.pollers_stopped = trio.current_time() - stopped
    return wire


def main(argv: list[str]) -> None:
    host, port, jobs = argv[0], int(argv[1]), int(argv[2])
    wire = trio.run(run_load, Target(host, port), jobs)
    print(json.dumps(wire.to_json()), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
