"""The runtime side of the compute-module job plane: the routes a real module container talks to.

Under `/_emulate/foundry/compute-modules/runtimes`: creating or resetting a runtime session (the
answer carries everything a module process needs), the long poll for jobs, result uploads,
schema posts, the restart notification and the inspect route. The poll and the result upload
are raw ASGI routes (`runtime_routes`), because they carry the load and the result bytes; the
others are a Quart blueprint (`runtime_blueprint`). Every path also exists below
`/replicas/{replica}`, so several module processes on one runtime can each restart without
failing the others' jobs.

Errors are in the compute-module family (`error`, `error_description`). The Module-Auth-Token is
returned only by the creation route, never by inspect, and never logged.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import trio
from quart import Blueprint, Response, request

from ...platform.errors import ApiError
from ...web.http import json_response, parse_json, read_body
from ...web.rawasgi import JSON_HEADERS, ClientGone, RawRequest, RawRoute
from ...web.requestlog import note_principal
from ..broker import Broker, BrokerClosed
from ..core.jobs import Job, JobState
from ..core.runtimes import REPLICA_PATTERN, Runtime, RuntimeRequest
from .errors import COMPUTE_MODULE, translated

if TYPE_CHECKING:
    from ..state import FoundryState

PREFIX = "/_emulate/foundry/compute-modules"
RUNTIMES = PREFIX + "/runtimes"
# How long handing a job to a poll may take before the job goes back to the queue.
DELIVERY_TIMEOUT = 30.0
# Where the emulator's own paths for one runtime live (plain, or for one named replica).
_RUNTIME_PATHS = ("/runtimes/{runtime_id}", "/runtimes/{runtime_id}/replicas/{replica}")


def closed_error(error: BrokerClosed) -> ApiError:
    """A closed broker as an answer, for where one must be built before raising (the family
    translates core errors and a closed broker by itself everywhere else)."""
    return translated(COMPUTE_MODULE, error)


def runtime_base(state: FoundryState, runtime_id: str) -> str:
    """The URL under which one runtime's routes live, on the HTTPS listener when there is one."""
    endpoints = state.context.endpoints
    if endpoints.https_port is not None:
        origin = f"https://{endpoints.runtime_host}:{endpoints.https_port}"
    else:
        origin = endpoints.base_url
    return f"{origin}{RUNTIMES}/{quote(runtime_id, safe='')}"


def _replica(params: Mapping[str, str]) -> str:
    replica = params.get("replica", "")
    if replica and not REPLICA_PATTERN.fullmatch(replica):
        raise COMPUTE_MODULE.error(
            404, "not_found", "A replica name has 1 to 64 letters, digits, '.', '_' or '-'."
        )
    return replica


def _authenticate(
    state: FoundryState, runtime_id: str, token: str | None, scope: MutableMapping[str, Any]
) -> Runtime:
    runtime = state.runtimes.authenticate(runtime_id, token)
    # The request log names the runtime (never its token).
    note_principal(scope, f"runtime:{runtime.runtime_id}")
    return runtime


def job_envelope(job: Job) -> bytes:
    """The poll answer both module libraries understand. The query goes in as the JSON bytes
    the job keeps (never parsed again); the rest is encoded around it."""
    return b"".join(
        (
            b'{"type":"computeModuleJobV1","computeModuleJobV1":{"jobId":',
            _json_bytes(job.job_id),
            b',"queryType":',
            _json_bytes(job.query_type),
            b',"query":',
            job.query_json,
            b',"userId":',
            _json_bytes(job.submitted_by_id),
            b"}}",
        )
    )


def _json_bytes(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


# Raw routes: the long poll and the result upload -------------------------------------------------


def runtime_routes(state: FoundryState) -> list[RawRoute]:
    async def poll(raw: RawRequest) -> None:
        replica = _replica(raw.params)
        runtime = _authenticate(
            state, raw.params["runtime_id"], raw.header(b"module-auth-token"), raw.scope
        )
        settings = state.context.settings
        await raw.read_body(settings.max_body_bytes, settings.body_timeout)
        broker = state.broker
        # Fast path: a job is waiting already, so there is no wait a disconnect must cut short.
        ready = broker.take_nowait(runtime, replica)
        if ready is not None:
            await _deliver(raw, broker, ready)
            return
        job: Job | None = None
        async with raw.cancelled_when_gone():
            with trio.move_on_after(broker.limits.poll_timeout):
                job = await broker.take(runtime, replica)
            if job is None:
                with contextlib.suppress(ClientGone):
                    await raw.respond(204)
            else:
                await _deliver(raw, broker, job)

    async def post_result(raw: RawRequest) -> None:
        runtime = _authenticate(
            state, raw.params["runtime_id"], raw.header(b"module-auth-token"), raw.scope
        )
        _replica(raw.params)
        broker = state.broker
        upload = broker.begin_upload(runtime, raw.params["job_id"], raw.content_length())
        idle_timeout = broker.limits.job_timeout
        try:
            more = True
            while more:
                chunk, more = await raw.receive_chunk(idle_timeout)
                await upload.feed(chunk)
        except BaseException:
            upload.abort()
            raise
        await upload.finish()
        await raw.respond(204)

    routes: list[RawRoute] = []
    for path in _RUNTIME_PATHS:
        routes.append(
            RawRoute("GET", PREFIX + path + "/job", poll, "Long-poll for the next job (204: none)")
        )
        routes.append(
            RawRoute(
                "POST",
                PREFIX + path + "/results/{job_id}",
                post_result,
                "Post a job's result (raw bytes, streamed on to a waiting caller)",
            )
        )
    return routes


async def _deliver(raw: RawRequest, broker: Broker, job: Job) -> None:
    """Send a taken job to its poller; if that fails, the job is first in line again."""
    delivered = False
    try:
        # A client that closes its connection right after reading the answer (`Connection:
        # close`) makes the disconnect arrive while this send is still returning: shield it, and
        # count the job delivered once its bytes are out.
        with trio.CancelScope(shield=True) as sending:
            sending.deadline = trio.current_time() + DELIVERY_TIMEOUT
            await raw.respond(200, job_envelope(job), JSON_HEADERS)
            delivered = True
    except ClientGone:
        pass
    finally:
        if not delivered:
            # Taken but not handed over (the poller went away): first in line again.
            broker.give_back(job)


# Quart routes: sessions, schemas, restart, inspect ----------------------------------------------


def runtime_blueprint(state: FoundryState) -> Blueprint:
    blueprint = Blueprint("compute_module_runtimes", __name__, url_prefix=PREFIX)
    settings = state.context.settings

    def authenticated(runtime_id: str) -> Runtime:
        return _authenticate(
            state,
            runtime_id,
            request.headers.get("Module-Auth-Token"),
            cast(MutableMapping[str, Any], request.scope),
        )

    async def json_body() -> Any:
        data = await read_body(COMPUTE_MODULE, settings.max_body_bytes, settings.body_timeout)
        return parse_json(data, COMPUTE_MODULE)

    @blueprint.post("/runtimes")
    async def create_runtime() -> Response:
        ask = RuntimeRequest.from_json(await json_body())
        runtime, existed = state.runtimes.create_or_reset(
            ask, state.context.clock.now(), state.context.randomness
        )
        ended = state.broker.runtime_reset(runtime) if existed else []
        return json_response(
            runtime_session_to_json(state, runtime, created=not existed, ended=ended)
        )

    @blueprint.post("/runtimes/<runtime_id>/schemas", defaults={"replica": ""})
    @blueprint.post("/runtimes/<runtime_id>/replicas/<replica>/schemas")
    async def post_schemas(runtime_id: str, replica: str) -> Response:
        _replica({"replica": replica})
        runtime = authenticated(runtime_id)
        names = state.runtimes.store_schemas(runtime, await json_body(), state.context.clock.now())
        return json_response({"functionNames": names})

    @blueprint.post("/runtimes/<runtime_id>/restart", defaults={"replica": ""})
    @blueprint.post("/runtimes/<runtime_id>/replicas/<replica>/restart")
    async def post_restart(runtime_id: str, replica: str) -> Response:
        _replica({"replica": replica})
        runtime = authenticated(runtime_id)
        # The Python library sends no body; read whatever comes so the connection stays usable.
        await read_body(COMPUTE_MODULE, settings.max_body_bytes, settings.body_timeout)
        # The Python library needs 200 and a JSON array of strings, or it exits.
        return json_response(state.broker.restart(runtime, replica))

    @blueprint.get("/runtimes/<runtime_id>/jobs/<job_id>")
    async def inspect(runtime_id: str, job_id: str) -> Response:
        # No authentication, as in the seed documents; and so never the token.
        runtime = state.runtimes.get(runtime_id)
        job = state.broker.jobs.get(job_id)
        if job.runtime_id != runtime.runtime_id:
            raise COMPUTE_MODULE.error(
                404, "not_found", f"Unknown job '{job_id}' for runtime '{runtime_id}'."
            )
        return json_response(
            {
                "runtime": runtime_to_json(state, runtime),
                "job": job_to_json(job),
                "schemas": [schema_to_json(s) for s in runtime.schemas.values()],
            }
        )

    return blueprint


# Serializers ------------------------------------------------------------------------------------


def millis(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def runtime_session_to_json(
    state: FoundryState, runtime: Runtime, *, created: bool, ended: list[str]
) -> dict[str, Any]:
    endpoints = state.context.endpoints
    base = runtime_base(state, runtime.runtime_id)
    ca_path = None if endpoints.ca_path is None else str(endpoints.ca_path)
    port = endpoints.https_port
    if port is None:
        port = (
            int(endpoints.base_url.rsplit(":", 1)[1])
            if endpoints.base_url.count(":") == 2
            else None
        )
    environment: dict[str, str] = {
        "RUNTIME_HOST": endpoints.runtime_host,
        "RUNTIME_PORT": "" if port is None else str(port),
        "GET_JOB_URI": base + "/job",
        "POST_RESULT_URI": base + "/results",
        "POST_SCHEMA_URI": base + "/schemas",
        "RESTART_NOTIFICATION_URI": base + "/restart",
    }
    if ca_path is not None:
        environment["CONNECTIONS_TO_OTHER_PODS_CA_PATH"] = ca_path
        environment["DEFAULT_CA_PATH"] = ca_path
    return {
        "runtimeId": runtime.runtime_id,
        "created": created,
        # Issued here, and only here: write it to a file without a trailing newline and point
        # MODULE_AUTH_TOKEN at that file.
        "moduleAuthToken": runtime.token,
        "getJobUri": environment["GET_JOB_URI"],
        "postResultUri": environment["POST_RESULT_URI"],
        "postSchemaUri": environment["POST_SCHEMA_URI"],
        "restartNotificationUri": environment["RESTART_NOTIFICATION_URI"],
        "replicaUriTemplate": base + "/replicas/{replica}",
        "runtimeHost": endpoints.runtime_host,
        "runtimePort": port,
        "caPath": ca_path,
        "deployedApps": [
            {"deployedAppRid": b.deployed_app_rid, "branch": b.branch}
            for b in state.runtimes.bindings_of(runtime.runtime_id)
        ],
        "endedJobs": ended,
        "environment": environment,
    }


def runtime_to_json(state: FoundryState, runtime: Runtime) -> dict[str, Any]:
    return {
        "runtimeId": runtime.runtime_id,
        "displayName": runtime.display_name,
        "onRestart": runtime.on_restart.value,
        "createdAt": millis(runtime.created_at),
        "resetAt": millis(runtime.reset_at),
        "lastPollAt": millis(runtime.last_poll_at),
        "lastSchemaPostAt": millis(runtime.last_schema_at),
        "pollsWaiting": state.broker.polling(runtime.runtime_id),
        "jobsQueued": state.broker.waiting(runtime.runtime_id),
        "deployedApps": [
            {"deployedAppRid": b.deployed_app_rid, "branch": b.branch, "active": b.active}
            for b in state.runtimes.bindings_of(runtime.runtime_id)
        ],
    }


def job_to_json(job: Job) -> dict[str, Any]:
    result = job.result
    return {
        "jobId": job.job_id,
        "runtimeId": job.runtime_id,
        "deployedAppRid": job.deployed_app_rid,
        "deployedAppBranch": job.branch,
        "queryType": job.query_type,
        "query": job.query,
        "source": "contour-sync" if job.origin == "sync" else "contour-async",
        "status": job.state.value,
        "submittedAt": millis(job.submitted_at),
        "dispatchedAt": millis(job.dispatched_at),
        "finishedAt": millis(job.finished_at),
        "dispatchCount": job.dispatch_count,
        "replica": job.replica or None,
        "failure": None
        if job.failure is None
        else {"kind": job.failure.kind.value, "message": job.failure.message},
        "result": None
        if result is None
        else {
            "size": result.size,
            "retained": result.chunks is not None,
            **_preview(result.preview, complete=len(result.preview) == result.size),
        },
        "uploading": job.uploading and job.state is JobState.RUNNING,
    }


def _preview(data: bytes, *, complete: bool) -> dict[str, Any]:
    try:
        return {
            "preview": data.decode("utf-8"),
            "previewEncoding": "utf-8",
            "previewComplete": complete,
        }
    except UnicodeDecodeError:
        return {
            "preview": base64.b64encode(data).decode("ascii"),
            "previewEncoding": "base64",
            "previewComplete": complete,
        }


def schema_to_json(schema: Any) -> dict[str, Any]:
    return {
        "functionName": schema.name,
        "schema": schema.payload,
        "postedAt": millis(schema.posted_at),
    }
