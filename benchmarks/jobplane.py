"""The compute-module job plane as the load generator plays it: simulated runtimes and callers.

Owns the wire paths (runtime long-poll and result upload, contour sync execute and the async
submit/status/result flow, token and getCurrent), `Target` (where and with which credentials),
HTTP/1.1 and HTTP/2 sessions behind one call signature, the echo runtime (answers every job at
once with a 100-byte body derived from the job's query) and the sync and async callers, which
check that each answer is their own job's. Imports trio and the benchmark's own modules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import trio

from benchmarks.h1 import H1Connection, HttpError, encode_request
from benchmarks.h2client import H2Connection, H2Error
from benchmarks.loadgen import Recorder
from benchmarks.procs import ProcessStats

RUNTIMES = "/_emulate/foundry/compute-modules/runtimes"
CONTOUR = "/contour-backend-multiplexer/api/module-group-multiplexer"
EXECUTE = CONTOUR + "/compute-modules/jobs/execute"
SUBMIT = CONTOUR + "/deployed-apps/jobs"
STATUS = CONTOUR + "/jobs/{}/status"
RESULT_V2 = CONTOUR + "/jobs/result/v2"
TOKEN = "/multipass/api/oauth2/token"
GET_CURRENT = "/api/v2/admin/users/getCurrent"
BODY_SIZE = 100
QUERY_TYPE = "echo"


class BenchError(Exception):
    """An answer was wrong: bad status, someone else's result, malformed job."""


# What a load-generating task may run into and must count as an error, not crash on.
FAILURES = (OSError, HttpError, H2Error, BenchError, trio.TooSlowError, ValueError, KeyError)


@dataclass(frozen=True)
class RuntimeRef:
    runtime_id: str
    token: str
    deployed_app: str

    def job_path(self) -> str:
        return f"{RUNTIMES}/{quote(self.runtime_id, safe='')}/job"

    def result_path(self, job_id: str) -> str:
        return f"{RUNTIMES}/{quote(self.runtime_id, safe='')}/results/{quote(job_id, safe='')}"


@dataclass
class Target:
    host: str
    port: int
    bearer: str
    runtimes: list[RuntimeRef]
    client_id: str = "bench-client"
    client_secret: str = "bench-client-secret"
    username: str = "bench-user"
    server: ProcessStats | None = None

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    def runtime(self, index: int) -> RuntimeRef:
        return self.runtimes[index % len(self.runtimes)]


def echo_body(tag: str) -> bytes:
    """The runtime's answer to the query {"tag": tag}: exactly BODY_SIZE bytes of JSON."""
    head = b'{"echo":"' + tag.encode() + b'","pad":"'
    return head + b"x" * (BODY_SIZE - len(head) - 2) + b'"}'


def execute_body(deployed_app: str, tag: str) -> bytes:
    return json.dumps(
        {"deployedAppRid": deployed_app, "queryType": QUERY_TYPE, "query": {"tag": tag}}
    ).encode()


def parse_job(body: bytes) -> tuple[str, str]:
    """The job id and tag of a `computeModuleJobV1` envelope."""
    envelope = json.loads(body)
    job = envelope.get("computeModuleJobV1")
    if not isinstance(job, dict) or not isinstance(job.get("jobId"), str):
        raise BenchError(f"not a computeModuleJobV1 envelope: {body[:200]!r}")
    if job.get("queryType") != QUERY_TYPE:
        raise BenchError(f"job has queryType {job.get('queryType')!r}")
    query = job.get("query")
    if not isinstance(query, dict) or not isinstance(query.get("tag"), str):
        raise BenchError(f"job query is not ours: {query!r}")
    return job["jobId"], query["tag"]


Headers = Sequence[tuple[str, str]]
Call = Callable[[str, str, Headers, bytes | None], Awaitable[tuple[int, bytes]]]


class H1Session:
    """One task's own keep-alive HTTP/1.1 connection, reopened after a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self.connection: H1Connection | None = None

    async def __call__(
        self, method: str, path: str, headers: Headers, body: bytes | None = None
    ) -> tuple[int, bytes]:
        if self.connection is None or self.connection.closed:
            self.connection = await H1Connection.open(self.host, self.port)
        try:
            response = await self.connection.request(
                encode_request(method, path, self.authority, headers, body)
            )
        except BaseException:
            self.close()
            raise
        return response.status, response.body

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class H2Session:
    """A task's view of a shared HTTP/2 connection: each call is one stream."""

    def __init__(self, connection: H2Connection) -> None:
        self.connection = connection

    async def __call__(
        self, method: str, path: str, headers: Headers, body: bytes | None = None
    ) -> tuple[int, bytes]:
        encoded = [(name.lower().encode(), value.encode()) for name, value in headers]
        response = await self.connection.request(method, path, encoded, body or b"")
        return response.status, response.body

    def close(self) -> None:
        pass


def bearer_headers(target: Target) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {target.bearer}"), ("Content-Type", "application/json")]


async def echo_runtime(
    call: Call,
    ref: RuntimeRef,
    errors: Recorder,
    *,
    polls: list[int] | None = None,
    jobs: list[int] | None = None,
) -> None:
    """Long-poll for jobs and answer each at once; runs until cancelled."""
    auth = [("Module-Auth-Token", ref.token)]
    post_headers = [*auth, ("Content-Type", "application/octet-stream")]
    job_path = ref.job_path()
    while True:
        try:
            status, body = await call("GET", job_path, auth, None)
            if polls is not None:
                polls[0] += 1
            if status == 204:
                continue
            if status != 200:
                raise BenchError(f"poll answered {status}: {body[:200]!r}")
            job_id, tag = parse_job(body)
            status, body = await call("POST", ref.result_path(job_id), post_headers, echo_body(tag))
            if status != 204:
                raise BenchError(f"result upload answered {status}: {body[:200]!r}")
            if jobs is not None:
                jobs[0] += 1
        except FAILURES as error:
            errors.error(f"runtime {ref.runtime_id}: {type(error).__name__}: {error}")
            await trio.sleep(0.05)  # a failing server must not turn this into a busy loop


async def sync_caller(
    call: Call,
    target: Target,
    ref: RuntimeRef,
    index: int,
    recorder: Recorder,
    stop: trio.Event,
    op_timeout: float,
) -> None:
    """Execute jobs back to back, checking each answer is this job's echo."""
    headers = bearer_headers(target)
    sequence = 0
    while not stop.is_set():
        tag = f"c{index:05d}-{sequence:07d}"
        sequence += 1
        try:
            with trio.fail_after(op_timeout):
                started = time.perf_counter()
                status, body = await call(
                    "POST", EXECUTE, headers, execute_body(ref.deployed_app, tag)
                )
                finished = time.perf_counter()
            if status != 200:
                raise BenchError(f"execute answered {status}: {body[:200]!r}")
            if body != echo_body(tag):
                raise BenchError(f"execute for {tag} got someone else's answer: {body[:120]!r}")
            recorder.done(started, finished)
        except FAILURES as error:
            recorder.error(f"caller {index}: {type(error).__name__}: {error}")


async def async_caller(
    call: Call,
    target: Target,
    ref: RuntimeRef,
    index: int,
    recorder: Recorder,
    stop: trio.Event,
    op_timeout: float,
    status_polls: list[int],
) -> None:
    """Submit, poll the status until succeeded, fetch result/v2; check it is this job's echo."""
    headers = bearer_headers(target)
    sequence = 0
    while not stop.is_set():
        tag = f"a{index:05d}-{sequence:07d}"
        sequence += 1
        try:
            with trio.fail_after(op_timeout):
                started = time.perf_counter()
                status, body = await call(
                    "POST", SUBMIT, headers, execute_body(ref.deployed_app, tag)
                )
                if status != 200:
                    raise BenchError(f"submit answered {status}: {body[:200]!r}")
                job_id = json.loads(body)["id"]
                status_path = STATUS.format(quote(job_id, safe=""))
                pause = 0.0
                while True:
                    # Like a real client, back off between status polls (2 ms doubling to 50 ms):
                    # polling flat out would only measure how fast status polls crowd out work.
                    if pause:
                        await trio.sleep(pause)
                    pause = min(0.05, pause * 2 or 0.002)
                    status, body = await call("GET", status_path, headers, None)
                    status_polls[0] += 1
                    if status != 200:
                        raise BenchError(f"status answered {status}: {body[:200]!r}")
                    state = json.loads(body).get("type")
                    if state == "succeeded":
                        break
                    if state not in ("queued", "running"):
                        raise BenchError(f"job {job_id} ended {state}: {body[:200]!r}")
                fetch = json.dumps({"id": job_id}).encode()
                status, body = await call("PUT", RESULT_V2, headers, fetch)
                finished = time.perf_counter()
            if status != 200:
                raise BenchError(f"result/v2 answered {status}: {body[:200]!r}")
            if body != echo_body(tag):
                raise BenchError(f"result/v2 for {tag} got someone else's answer: {body[:120]!r}")
            recorder.done(started, finished)
        except FAILURES as error:
            recorder.error(f"async caller {index}: {type(error).__name__}: {error}")


async def create_runtime(call: Call, runtime_id: str, deployed_app: str) -> RuntimeRef:
    """Create (or reset) a runtime through the emulator's control route."""
    payload = json.dumps({"runtimeId": runtime_id, "deployedAppRid": deployed_app}).encode()
    status, body = await call("POST", RUNTIMES, [("Content-Type", "application/json")], payload)
    if status != 200:
        raise BenchError(f"creating runtime {runtime_id} answered {status}: {body[:200]!r}")
    token = json.loads(body)["moduleAuthToken"]
    return RuntimeRef(runtime_id, token, deployed_app)
