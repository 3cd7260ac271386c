"""The contour side of the compute-module job plane: the routes applications call to run jobs.

Under `/contour-backend-multiplexer/api/module-group-multiplexer`, with a bearer token (no scope):
the synchronous execute (a raw ASGI route, `contour_routes`: it streams the runtime's result
bytes to the caller as they arrive), and the asynchronous submit, status and result fetch (a
Quart blueprint, `contour_blueprint`). A job's status and result are visible only to the principal
who submitted it, as in Foundry's own API ("can only be called by a user that previously
submitted the job").

How failures reach callers (docs/foundry/compute-modules.md, "Job lifecycle"): a job whose
module posted a function-failure report is `failed`; a waiting synchronous caller gets 500
`job_failed` carrying the module's message; the status carries the message (and a Conjure
`exception`); the failure body stays fetchable through `jobs/result/v2`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response

from ...platform.errors import ApiError
from ...web.http import json_response, parse_json, read_body
from ...web.rawasgi import ClientGone, RawRequest, RawRoute
from ...web.requestlog import note_principal
from ..broker import Broker, BrokerClosed
from ..core.errors import AuthenticationError
from ..core.jobs import Failure, FailureKind, Job, JobSpec, JobState
from ..results import ResultPipe
from .auth import Caller, unauthorized
from .errors import COMPUTE_MODULE
from .runtime import closed_error, millis

if TYPE_CHECKING:
    from ..core.principals import Principal
    from ..state import FoundryState

PREFIX = "/contour-backend-multiplexer/api/module-group-multiplexer"
OCTET_STREAM = [(b"content-type", b"application/octet-stream")]


def _parse_spec(data: bytes) -> JobSpec:
    return JobSpec.from_json(parse_json(data, COMPUTE_MODULE))


def _submit(state: FoundryState, spec: JobSpec, principal: Principal, *, sync: bool) -> Job:
    """A new job (its core errors and a closed broker are translated by the family)."""
    return state.broker.submit(
        spec, submitted_by=principal.username, submitted_by_id=principal.id, sync=sync
    )


# The synchronous execute --------------------------------------------------------------------------


def contour_routes(state: FoundryState) -> list[RawRoute]:
    def authenticate(raw: RawRequest) -> Principal:
        header = raw.header(b"authorization") or ""
        scheme, _, value = header.strip().partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
        try:
            principal, _ = state.identity.authenticate(token, state.context.clock.now())
        except AuthenticationError as error:
            raise unauthorized(COMPUTE_MODULE, error.code, error.message) from None
        note_principal(raw.scope, principal.username)
        return principal

    async def execute(raw: RawRequest) -> None:
        principal = authenticate(raw)
        settings = state.context.settings
        body = await raw.read_body(settings.max_body_bytes, settings.body_timeout)
        spec = _parse_spec(body)
        broker = state.broker
        job = _submit(state, spec, principal, sync=True)
        pipe = broker.pipe(job)
        problem: ApiError | None = None
        done = False
        try:
            async with raw.cancelled_when_gone():
                try:
                    problem = await _answer(raw, broker, job, pipe)
                    done = True
                except ClientGone:
                    pass
        finally:
            if not done:
                broker.caller_gone(job, FailureKind.CALLER_LEFT)
        if problem is not None:
            raise problem

    return [
        RawRoute(
            "POST",
            PREFIX + "/compute-modules/jobs/execute",
            execute,
            "Run a job and stream its result (application/octet-stream)",
        )
    ]


async def _answer(raw: RawRequest, broker: Broker, job: Job, pipe: ResultPipe) -> ApiError | None:
    """Stream the job's result to the caller; an error to send instead, if it fails first."""
    receive = pipe.receive_channel
    first: bytes | None = None
    with trio.move_on_after(broker.limits.execute_timeout) as waiting:
        try:
            first = await receive.receive()
        except trio.EndOfChannel:
            first = None
    if waiting.cancelled_caught:
        queued = job.state is JobState.QUEUED
        broker.caller_gone(job, FailureKind.EXECUTE_TIMEOUT)
        if queued:
            return COMPUTE_MODULE.error(
                504,
                "job_timeout",
                f"No runtime took compute-module job '{job.job_id}' within "
                f"{broker.limits.execute_timeout:g} s; the job was cancelled.",
            )
        return COMPUTE_MODULE.error(
            504,
            "job_timeout",
            f"Compute-module job '{job.job_id}' produced no result within "
            f"{broker.limits.execute_timeout:g} s. It keeps running; fetch its result later with "
            f'PUT {PREFIX}/jobs/result/v2 and {{"id": "{job.job_id}"}}.',
        )
    if first is None:
        problem = _end_problem(broker, job)
        if problem is None:
            await raw.respond(200, b"", OCTET_STREAM)
        return problem
    chunks = [first]
    ended = False
    while True:
        try:
            chunks.append(receive.receive_nowait())
        except trio.WouldBlock:
            break
        except trio.EndOfChannel:
            ended = True
            break
    if ended:
        problem = _end_problem(broker, job)
        if problem is None:
            await raw.respond(200, b"".join(chunks), OCTET_STREAM)
        return problem
    headers = list(OCTET_STREAM)
    declared = pipe.declared_length
    if declared is not None:
        headers.append((b"content-length", str(declared).encode("ascii")))
    await raw.start(200, headers)
    # With a declared length, the bytes that complete the body would make the answer look
    # whole to the caller: they are held back until the job has succeeded (a runtime reset
    # can still fail it between the last byte and the result's end).
    held = _HeldTail(declared)
    for chunk in chunks:
        await held.forward(raw, chunk)
    async for chunk in receive:
        await held.forward(raw, chunk)
    if job.state is JobState.SUCCEEDED:
        await raw.send_body(held.tail, more=False)
        return None
    # The job failed or broke off after its bytes started flowing: cut the response, so the
    # caller sees a truncated body rather than a complete-looking one.
    raise ClientGone(f"job {job.job_id} ended {job.state.value} mid-stream")


class _HeldTail:
    """Passes a streamed result through, except the bytes that complete a declared length."""

    def __init__(self, declared: int | None) -> None:
        self.declared = declared
        self.sent = 0
        self.tail = b""

    async def forward(self, raw: RawRequest, chunk: bytes) -> None:
        if self.declared is not None and self.sent + len(chunk) >= self.declared:
            self.tail += chunk
            await trio.lowlevel.checkpoint()
            return
        self.sent += len(chunk)
        await raw.send_body(chunk, more=True)


def _end_problem(broker: Broker, job: Job) -> ApiError | None:
    """What to answer a caller whose job ended before any result byte was sent."""
    state = job.state
    if state is JobState.SUCCEEDED:
        return None
    failure = job.failure
    if failure is not None:
        kind = failure.kind
        if kind in (
            FailureKind.JOB_TIMEOUT,
            FailureKind.QUEUE_TIMEOUT,
            FailureKind.EXECUTE_TIMEOUT,
        ):
            return COMPUTE_MODULE.error(504, "job_timeout", failure.message)
        if kind is FailureKind.SHUTDOWN:
            return COMPUTE_MODULE.error(503, "shutting_down", failure.message)
        if kind is FailureKind.EMULATOR_RESET:
            return COMPUTE_MODULE.error(503, "emulator_reset", failure.message)
        return COMPUTE_MODULE.error(500, "job_failed", failure.message)
    if broker.closed is not None:
        return closed_error(BrokerClosed(broker.closed))
    return COMPUTE_MODULE.error(
        502,
        "result_incomplete",
        f"The runtime's result upload for job '{job.job_id}' broke off. The job keeps running; "
        f"fetch its result later with PUT {PREFIX}/jobs/result/v2.",
    )


# Asynchronous jobs ------------------------------------------------------------------------------


def contour_blueprint(state: FoundryState) -> Blueprint:
    blueprint = Blueprint("contour", __name__, url_prefix=PREFIX)
    settings = state.context.settings
    bearer = state.auth.bearer(COMPUTE_MODULE)

    async def body_json() -> Any:
        return parse_json(
            await read_body(COMPUTE_MODULE, settings.max_body_bytes, settings.body_timeout),
            COMPUTE_MODULE,
        )

    def own_job(caller: Caller, job_id: str) -> Job:
        job = state.broker.jobs.get(job_id)
        if job.submitted_by != caller.principal.username:
            # Foundry: only the principal who submitted a job may see it. Do not confirm it exists.
            raise COMPUTE_MODULE.error(404, "not_found", f"Unknown compute-module job '{job_id}'.")
        return job

    @blueprint.post("/deployed-apps/jobs")
    @bearer
    async def submit(caller: Caller) -> Response:
        spec = _spec_from(await body_json())
        job = _submit(state, spec, caller.principal, sync=False)
        return json_response(submitted_to_json(job))

    @blueprint.get("/jobs/<job_id>/status")
    @bearer
    async def status(caller: Caller, job_id: str) -> Response:
        return json_response(job_status_to_json(own_job(caller, job_id)))

    @blueprint.put("/jobs/result/v2")
    @bearer
    async def result(caller: Caller) -> Response:
        job = own_job(caller, _job_id_from(await body_json()))
        return result_response(job, state.broker)

    return blueprint


def _spec_from(data: Any) -> JobSpec:
    return JobSpec.from_json(data)


def _job_id_from(data: Any) -> str:
    """`id`, or the `jobId` inside the `jobHandle` string, as `PUT jobs/result/v2` takes them."""
    if not isinstance(data, dict):
        raise COMPUTE_MODULE.error(
            400, "invalid_request", "The request body must be a JSON object."
        )
    job_id = data.get("id")
    if isinstance(job_id, str) and job_id:
        return job_id
    handle = data.get("jobHandle")
    if isinstance(handle, str):
        try:
            parsed = json.loads(handle)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("jobId"), str) and parsed["jobId"]:
            return str(parsed["jobId"])
    raise COMPUTE_MODULE.error(
        400, "invalid_request", "The request body must include an id or a valid jobHandle."
    )


def result_response(job: Job, broker: Broker) -> Response:
    state = job.state
    if state in (JobState.QUEUED, JobState.RUNNING):
        raise COMPUTE_MODULE.error(
            409,
            "job_not_ready",
            f"Compute-module job '{job.job_id}' has not finished yet ({state.value}).",
        )
    if state is JobState.CANCELLED:
        message = job.failure.message if job.failure else "The job was cancelled."
        raise COMPUTE_MODULE.error(
            409, "job_cancelled", f"Compute-module job '{job.job_id}' was cancelled: {message}"
        )
    result = job.result
    if result is None:
        # Failed without anything from the module (timed out, restarted): nothing to fetch.
        message = job.failure.message if job.failure else "The job failed."
        raise COMPUTE_MODULE.error(
            409, "job_failed", f"Compute-module job '{job.job_id}' failed: {message}"
        )
    body = result.body()
    if body is None:
        raise COMPUTE_MODULE.error(
            409,
            "result_not_retained",
            f"The result of compute-module job '{job.job_id}' ({result.size} bytes) was larger "
            f"than max_retained_result_bytes ({broker.limits.max_retained_result_bytes}), or "
            "than max_retained_streamed_result_bytes "
            f"({broker.limits.max_retained_streamed_result_bytes}) while it streamed to its "
            "synchronous caller; it was only streamed through.",
        )
    # For a failed job this is the module's own failure report, kept so it can be read.
    return Response(body, status=200, content_type="application/octet-stream")


# Serializers ------------------------------------------------------------------------------------


def job_handle(job: Job) -> str:
    return json.dumps(
        {
            "type": "v1",
            "jobId": job.job_id,
            "nodeId": None,
            "moduleId": None,
            "persistJobResult": None,
        },
        separators=(",", ":"),
    )


def submitted_to_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.job_id,
        "nodeId": None,
        "moduleId": None,
        "jobHandle": job_handle(job),
        "persistJobResult": None,
        "status": job_status_to_json(job),
    }


def timing_to_json(job: Job) -> dict[str, Any]:
    submitted = millis(job.submitted_at)
    dispatched = millis(job.dispatched_at)
    return {
        "type": "queuedJob",
        "queuedJob": {
            "multiplexerSubmitTimeMillis": submitted,
            "queueSubmitTimeMillis": submitted,
            "queuedJobDispatchTimeMillis": dispatched,
            "moduleSubmitTimeMillis": dispatched if dispatched is not None else submitted,
        },
    }


_EXCEPTION_TYPES = {
    FailureKind.FUNCTION_ERROR: ("CUSTOM_SERVER", "ComputeModule:FunctionFailed"),
    FailureKind.JOB_TIMEOUT: ("TIMEOUT", "ComputeModule:JobTimeout"),
    FailureKind.MODULE_RESTARTED: ("INTERNAL", "ComputeModule:ModuleRestarted"),
    FailureKind.RUNTIME_RESET: ("INTERNAL", "ComputeModule:RuntimeReset"),
    FailureKind.QUEUE_TIMEOUT: ("TIMEOUT", "ComputeModule:NotPolled"),
    FailureKind.CALLER_LEFT: ("CUSTOM_CLIENT", "ComputeModule:CallerLeft"),
    FailureKind.EXECUTE_TIMEOUT: ("TIMEOUT", "ComputeModule:ExecuteTimeout"),
    FailureKind.EMULATOR_RESET: ("INTERNAL", "ComputeModule:EmulatorReset"),
    FailureKind.SHUTDOWN: ("INTERNAL", "ComputeModule:Shutdown"),
}


def exception_to_json(failure: Failure) -> dict[str, Any]:
    """Conjure's UserFriendlyException, as the module-group-multiplexer API describes failures."""
    code, name = _EXCEPTION_TYPES[failure.kind]
    return {
        "args": [],
        "errorInstanceId": failure.instance_id,
        "errorType": {"code": code, "name": name},
        "message": failure.message,
        "safeMessage": None,
    }


def job_status_to_json(job: Job) -> dict[str, Any]:
    state = job.state
    if state is JobState.QUEUED:
        return {"type": "queued", "queued": {"queueInfo": "NORMAL_OPERATION"}}
    if state in (JobState.RUNNING, JobState.SUCCEEDED):
        return {
            "type": state.value,
            state.value: {
                "metadata": None,
                "intermediateJobInfoList": [],
                "multiplexerJobTiming": timing_to_json(job),
            },
        }
    failure = job.failure
    assert failure is not None
    if state is JobState.FAILED:
        return {
            "type": "failed",
            "failed": {
                "message": failure.message,
                "exception": exception_to_json(failure),
                "multiplexerJobTiming": timing_to_json(job),
            },
        }
    return {
        "type": "canceled",
        "canceled": {"message": failure.message, "exception": exception_to_json(failure)},
    }
