"""The synchronous job core: the transition table, the job table's books, results, retention,
failure-report recognition, and runtimes (tokens, bindings, schemas). No event loop."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from emulator.foundry.core.errors import (
    AuthenticationError,
    Conflict,
    InvalidArgument,
    NotFound,
    QueueFull,
)
from emulator.foundry.core.jobs import (
    TRANSITIONS,
    Failure,
    FailureKind,
    Job,
    JobEvent,
    JobResult,
    JobSpec,
    JobState,
    JobTable,
    ResultDecision,
    RetentionLimits,
    apply,
    function_failure,
    may_be_failure,
)
from emulator.foundry.core.runtimes import RuntimeRegistry, RuntimeRequest
from emulator.foundry.seed import ComputeModulesSeed
from emulator.platform.clock import Randomness
from emulator.platform.seedschema import Node

APP = "ri.foundry.main.deployed-app.test"
FAILURE = Failure(FailureKind.JOB_TIMEOUT, "too slow", "instance-1")
_ids = itertools.count()


def spec(query: Any = None) -> JobSpec:
    return JobSpec(deployed_app_rid=APP, branch="master", query_type="add", query=query or {})


def submit(table: JobTable, now: float = 0.0, app: str = APP) -> Job:
    return table.submit(
        job_id=f"job-{next(_ids)}",
        runtime_id="rt",
        deployed_app_rid=app,
        branch="master",
        spec=spec(),
        origin="async",
        submitted_by="jane",
        submitted_by_id="id-jane",
        now=now,
    )


def result(body: bytes) -> JobResult:
    return JobResult(size=len(body), chunks=(body,), preview=body[:1024])


def job_in(state: JobState) -> Job:
    """A job in `state`, reached through the table (never by assigning the state)."""
    table = JobTable()
    job = submit(table)
    path = {
        JobState.QUEUED: [],
        JobState.RUNNING: [JobEvent.DISPATCH],
        JobState.SUCCEEDED: [JobEvent.DISPATCH, JobEvent.SUCCEED],
        JobState.FAILED: [JobEvent.DISPATCH, JobEvent.FAIL],
        JobState.CANCELLED: [JobEvent.CANCEL],
    }[state]
    for event in path:
        table.transition(job, event, 1.0, failure=FAILURE)
    assert job.state is state
    return job


# The state machine -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event"), list(itertools.product(JobState, JobEvent)), ids=lambda v: v.value
)
def test_every_state_and_event_follows_the_table(state: JobState, event: JobEvent) -> None:
    job = job_in(state)
    expected = TRANSITIONS.table.get((state, event))
    if expected is None:
        with pytest.raises(Conflict):
            apply(job, event, 2.0, failure=FAILURE)
        assert job.state is state, "an illegal transition must change nothing"
    else:
        assert apply(job, event, 2.0, failure=FAILURE) is expected
        assert job.state is expected


def test_finished_states_are_terminal() -> None:
    for (state, _event), _target in TRANSITIONS.table.items():
        assert not state.finished


@pytest.mark.parametrize(
    ("event", "field", "value"),
    [
        (JobEvent.DISPATCH, "dispatched_at", 5.0),
        (JobEvent.DISPATCH, "dispatch_count", 1),
        (JobEvent.DISPATCH, "replica", "r1"),
    ],
)
def test_dispatch_records_when_and_where(event: JobEvent, field: str, value: Any) -> None:
    job = job_in(JobState.QUEUED)
    apply(job, event, 5.0, replica="r1")
    assert getattr(job, field) == value


def test_failing_or_cancelling_needs_a_reason() -> None:
    job = job_in(JobState.RUNNING)
    with pytest.raises(ValueError, match="reason"):
        apply(job, JobEvent.FAIL, 3.0)
    assert job.state is JobState.RUNNING


def test_finishing_records_the_time_and_the_reason() -> None:
    job = job_in(JobState.RUNNING)
    apply(job, JobEvent.FAIL, 7.0, failure=FAILURE)
    assert (job.finished_at, job.failure) == (7.0, FAILURE)


def test_return_forgets_the_replica_and_any_upload() -> None:
    job = job_in(JobState.RUNNING)
    job.uploading = True
    apply(job, JobEvent.RETURN, 3.0)
    assert (job.state, job.replica, job.uploading) == (JobState.QUEUED, None, False)


# The job table -----------------------------------------------------------------------------------


def test_queue_depth_is_per_deployed_app_and_frees_up_on_dispatch() -> None:
    table = JobTable(RetentionLimits(queue_depth=2))
    first = submit(table)
    submit(table)
    with pytest.raises(QueueFull):
        submit(table)
    submit(table, app="ri.foundry.main.deployed-app.other")
    table.transition(first, JobEvent.DISPATCH, 1.0)
    submit(table)
    assert table.queued_per_app[(APP, "master")] == 2


def test_a_returned_job_counts_as_queued_again_even_beyond_the_depth() -> None:
    table = JobTable(RetentionLimits(queue_depth=1))
    job = submit(table)
    table.transition(job, JobEvent.DISPATCH, 1.0)
    submit(table)
    table.transition(job, JobEvent.RETURN, 2.0)
    assert table.queued_per_app[(APP, "master")] == 2


def test_a_failed_submit_changes_nothing() -> None:
    table = JobTable(RetentionLimits(queue_depth=1))
    submit(table)
    with pytest.raises(QueueFull):
        submit(table)
    assert len(table) == 1


@pytest.mark.parametrize(
    ("state", "uploading", "has_result", "outcome"),
    [
        (JobState.RUNNING, False, False, ResultDecision.ACCEPT),
        (JobState.RUNNING, True, False, Conflict),
        (JobState.SUCCEEDED, False, True, Conflict),
        (JobState.FAILED, False, True, Conflict),
        (JobState.FAILED, False, False, ResultDecision.DISCARD),
        (JobState.CANCELLED, False, False, ResultDecision.DISCARD),
        (JobState.QUEUED, False, False, Conflict),
    ],
)
def test_who_may_post_a_result(
    state: JobState, uploading: bool, has_result: bool, outcome: Any
) -> None:
    table = JobTable()
    job = job_in(state)
    table.jobs[job.job_id] = job
    job.uploading = uploading
    if has_result:
        job.result = result(b"1")
    if isinstance(outcome, ResultDecision):
        assert table.begin_result(job, 9.0) is outcome
    else:
        with pytest.raises(outcome):
            table.begin_result(job, 9.0)


def test_a_result_for_a_job_that_went_back_to_the_queue_takes_it_out_again() -> None:
    table = JobTable()
    job = submit(table)
    table.transition(job, JobEvent.DISPATCH, 1.0, replica="a")
    table.transition(job, JobEvent.RETURN, 2.0)
    assert table.begin_result(job, 3.0) is ResultDecision.ACCEPT
    assert (job.state, job.dispatch_count) == (JobState.RUNNING, 2)
    assert table.queued_per_app == {}


def test_first_complete_result_wins_and_an_aborted_one_does_not_count() -> None:
    table = JobTable()
    job = submit(table)
    table.transition(job, JobEvent.DISPATCH, 1.0)
    table.begin_result(job, 2.0)
    table.abort_result(job)
    assert table.begin_result(job, 3.0) is ResultDecision.ACCEPT
    assert table.finish_result(job, result(b"42"), None, 4.0, "i") == []
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    with pytest.raises(Conflict, match="first complete result wins"):
        table.begin_result(job, 5.0)


def test_a_failure_report_fails_the_job_and_keeps_the_body() -> None:
    table = JobTable()
    job = submit(table)
    table.transition(job, JobEvent.DISPATCH, 1.0)
    table.begin_result(job, 2.0)
    table.finish_result(job, result(b'{"exception": "boom"}'), "boom", 3.0, "inst")
    assert job.state is JobState.FAILED
    assert job.failure == Failure(FailureKind.FUNCTION_ERROR, "boom", "inst")
    assert job.result is not None
    assert job.result.body() == b'{"exception": "boom"}'


def test_a_result_arriving_after_the_job_ended_is_not_recorded() -> None:
    table = JobTable()
    job = submit(table)
    table.transition(job, JobEvent.DISPATCH, 1.0)
    table.begin_result(job, 2.0)
    table.transition(job, JobEvent.FAIL, 3.0, failure=FAILURE)
    assert table.finish_result(job, result(b"late"), None, 4.0, "i") is None
    assert job.result is None
    assert job.state is JobState.FAILED


def test_retention_by_count_forgets_the_oldest_finished_and_leaves_a_tombstone() -> None:
    table = JobTable(RetentionLimits(max_retained_jobs=2))
    jobs = [submit(table) for _ in range(3)]
    for job in jobs:
        table.transition(job, JobEvent.CANCEL, 1.0, failure=FAILURE)
    assert [j.job_id for j in table] == [jobs[1].job_id, jobs[2].job_id]
    with pytest.raises(NotFound) as error:
        table.get(jobs[0].job_id)
    assert error.value.code == "job_expired"
    with pytest.raises(NotFound) as unknown:
        table.get("never-existed")
    assert unknown.value.code == "not_found"


def test_retention_by_bytes_counts_kept_results_and_queries() -> None:
    # Each job's query is `{}`: 2 bytes, kept with the job (issue 16, defect 9).
    table = JobTable(RetentionLimits(max_retained_total_bytes=10))
    first, second, third = (submit(table) for _ in range(3))
    for job, body in ((first, b"123456"), (second, b"123456")):
        table.transition(job, JobEvent.DISPATCH, 1.0)
        table.begin_result(job, 1.0)
        table.finish_result(job, result(body), None, 2.0, "i")
    assert first.job_id not in table.jobs
    assert table.retained_bytes == 2 + 6
    table.transition(third, JobEvent.DISPATCH, 1.0)
    table.begin_result(third, 1.0)
    table.finish_result(third, JobResult(size=99, chunks=None, preview=b""), None, 2.0, "i")
    assert third.job_id in table.jobs
    assert table.retained_bytes == 2 + 6 + 2


def test_forget_only_finished_jobs() -> None:
    table = JobTable()
    job = submit(table)
    assert not table.forget(job.job_id)
    table.transition(job, JobEvent.CANCEL, 1.0, failure=FAILURE)
    assert table.forget(job.job_id)
    assert not table.forget(job.job_id)
    assert len(table) == 0
    assert table.finished_count == 0


def test_tombstones_are_bounded() -> None:
    table = JobTable(RetentionLimits(max_retained_jobs=3))
    for _ in range(10):
        job = submit(table)
        table.transition(job, JobEvent.CANCEL, 1.0, failure=FAILURE)
        table.forget(job.job_id)
    assert len(table.tombstones) == 3
    assert len(table.finished_order) == 0


def test_running_on_filters_by_runtime_and_replica() -> None:
    table = JobTable()
    a, b, c = (submit(table) for _ in range(3))
    table.transition(a, JobEvent.DISPATCH, 1.0, replica="")
    table.transition(b, JobEvent.DISPATCH, 1.0, replica="r2")
    assert table.running_on("rt") == [a, b]
    assert table.running_on("rt", "r2") == [b]
    assert table.running_on("other") == []
    assert c.state is JobState.QUEUED


# Execute requests --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"deployedAppRid": APP, "queryType": "q"}, (APP, None, "q", {})),
        ({"deployedAppRid": f" {APP} ", "queryType": " q ", "query": None}, (APP, None, "q", None)),
        (
            {"deployedAppRid": APP, "deployedAppBranch": " ", "queryType": "q", "query": [1]},
            (APP, None, "q", [1]),
        ),
        (
            {"deployedAppRid": APP, "deployedAppBranch": "dev", "queryType": "q"},
            (APP, "dev", "q", {}),
        ),
    ],
)
def test_execute_request_fields(body: dict[str, Any], expected: tuple[Any, ...]) -> None:
    parsed = JobSpec.from_json(body)
    assert (parsed.deployed_app_rid, parsed.branch, parsed.query_type, parsed.query) == expected


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "x",
        {},
        {"deployedAppRid": APP},
        {"queryType": "q"},
        {"deployedAppRid": "", "queryType": "q"},
        {"deployedAppRid": 3, "queryType": "q"},
        {"deployedAppRid": APP, "queryType": {"a": 1}},
        {"deployedAppRid": APP, "queryType": "q", "deployedAppBranch": 7},
    ],
)
def test_bad_execute_requests_are_invalid_arguments(body: Any) -> None:
    with pytest.raises(InvalidArgument):
        JobSpec.from_json(body)


# Failure reports ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"exception": "division by zero: Traceback ..."}', "division by zero: Traceback ..."),
        (b'{"error": "Unknown query type"}', "Unknown query type"),
        (b'{"error":"Error","reason":"deliberate failure"}', "Error: deliberate failure"),
        (b'  {"error":"TypeError","reason":"x is undefined"}\n', "TypeError: x is undefined"),
        (b'{"error": "a thrown string"}', "a thrown string"),
        (b"3", None),
        (b'"error"', None),
        (b'{"error": "x", "detail": "y"}', None),
        (b'{"error": 1}', None),
        (b'{"exception": "x"}{"exception": "y"}', None),
        (b'{"result": "ok"}', None),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_function_failure_recognises_both_libraries(body: bytes, message: str | None) -> None:
    assert function_failure(body) == message


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (b"", None),
        (b"   ", None),
        (b"{", None),
        (b'{"e', None),
        (b'{"exc', None),
        (b'{"exception"', True),
        (b'{ "error"', True),
        (b'{"err', None),
        (b'{"errors"', False),
        (b'{"step": 1}', False),
        (b"[1, 2]", False),
        (b'"item 0"', False),
        (b"3", False),
        (b"{}", False),
        (b" " * 2000, False),
    ],
)
def test_may_be_failure_decides_from_the_first_bytes(prefix: bytes, expected: bool | None) -> None:
    assert may_be_failure(prefix) is expected


# Runtimes ----------------------------------------------------------------------------------------


def modules_seed(data: dict[str, Any]) -> ComputeModulesSeed:
    return ComputeModulesSeed.from_node(Node(data, "foundry.compute_modules"))


SEED = modules_seed(
    {
        "runtimes": [
            {"runtime_id": "seeded", "module_auth_token": "seeded-token"},
            {"runtime_id": "generated"},
        ],
        "deployed_apps": [
            {"deployed_app_rid": APP, "runtime_id": "seeded"},
            {"deployed_app_rid": APP, "branch": "dev", "runtime_id": "generated"},
            {
                "deployed_app_rid": "ri.foundry.main.deployed-app.off",
                "runtime_id": "seeded",
                "active": False,
            },
        ],
    }
)


def registry() -> RuntimeRegistry:
    return RuntimeRegistry.from_seed(SEED, 0.0, Randomness())


def test_tokens_are_checked_and_runtimes_are_isolated() -> None:
    runtimes = registry()
    assert runtimes.authenticate("seeded", "seeded-token").runtime_id == "seeded"
    generated = runtimes.get("generated").token
    assert generated.startswith("foundry_module_auth_")
    assert len(generated) > 40
    with pytest.raises(AuthenticationError):
        runtimes.authenticate("generated", "seeded-token")
    with pytest.raises(AuthenticationError) as missing:
        runtimes.authenticate("seeded", None)
    assert missing.value.code == "missing_module_auth_token"
    with pytest.raises(NotFound):
        runtimes.authenticate("nope", "seeded-token")


def test_generated_tokens_survive_an_emulator_reset_and_seeded_ones_are_the_seeds() -> None:
    first = registry()
    second = RuntimeRegistry.from_seed(SEED, 1.0, Randomness(), first)
    assert second.get("generated").token == first.get("generated").token
    assert second.get("seeded").token == "seeded-token"


def test_reset_keeps_the_token_and_the_bindings_unless_told() -> None:
    runtimes = registry()
    runtime = runtimes.get("seeded")
    runtimes.store_schemas(runtime, [{"functionName": "add"}], 1.0)
    ask = RuntimeRequest.from_json({"runtimeId": "seeded"})
    again, existed = runtimes.create_or_reset(ask, 5.0, Randomness())
    assert existed
    assert again is runtime
    assert runtime.token == "seeded-token"
    assert runtime.schemas == {}
    assert runtimes.resolve(APP, None).runtime_id == "seeded"
    rotated, _ = runtimes.create_or_reset(
        RuntimeRequest.from_json({"runtimeId": "seeded", "rotateToken": True}), 6.0, Randomness()
    )
    assert rotated.token != "seeded-token"


def test_reset_with_a_deployed_app_moves_that_binding() -> None:
    runtimes = registry()
    ask = RuntimeRequest.from_json({"runtimeId": "fresh", "deployedAppRid": APP, "branch": "dev"})
    _, existed = runtimes.create_or_reset(ask, 5.0, Randomness())
    assert not existed
    assert runtimes.resolve(APP, "dev").runtime_id == "fresh"
    assert runtimes.resolve(APP, "master").runtime_id == "seeded"
    assert [b.branch for b in runtimes.bindings_of("generated")] == []


@pytest.mark.parametrize(
    ("rid", "branch", "outcome"),
    [
        (APP, None, "seeded"),
        (APP, "dev", "generated"),
        (APP, "nope", NotFound),
        ("ri.foundry.main.deployed-app.unknown", None, NotFound),
        ("ri.foundry.main.deployed-app.off", None, NotFound),
    ],
)
def test_resolving_deployed_apps(rid: str, branch: str | None, outcome: Any) -> None:
    runtimes = registry()
    if isinstance(outcome, str):
        assert runtimes.resolve(rid, branch).runtime_id == outcome
    else:
        with pytest.raises(outcome):
            runtimes.resolve(rid, branch)


def test_an_app_on_several_branches_without_master_needs_a_branch() -> None:
    runtimes = modules_seed(
        {
            "deployed_apps": [
                {"deployed_app_rid": APP, "branch": "a", "runtime_id": "x"},
                {"deployed_app_rid": APP, "branch": "b", "runtime_id": "y"},
            ]
        }
    )
    registry_ = RuntimeRegistry.from_seed(runtimes, 0.0, Randomness())
    with pytest.raises(InvalidArgument, match="several branches"):
        registry_.resolve(APP, None)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {},
        {"runtimeId": ""},
        {"runtimeId": "a/b"},
        {"runtimeId": "a b"},
        {"runtimeId": "x", "deployedAppRid": "not-a-rid"},
        {"runtimeId": "x", "branch": "dev"},
        {"runtimeId": "x", "displayName": " "},
        {"runtimeId": "x", "rotateToken": "yes"},
        {"runtimeId": "x", "deployedAppRid": 5},
    ],
)
def test_bad_runtime_requests(body: Any) -> None:
    with pytest.raises(InvalidArgument):
        RuntimeRequest.from_json(body)


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ([{"functionName": "add", "inputs": []}, {"functionName": "count"}], ["add", "count"]),
        ({"functions": [{"functionName": "a"}]}, ["a"]),
        ({"schemas": [{"function_name": "b", "schema": {"x": 1}}]}, ["b"]),
        ({"name": "c", "schemaPayload": {}}, ["c"]),
        ({"d": {"inputs": []}, "e": {}}, ["d", "e"]),
        (3, []),
        (None, []),
    ],
)
def test_schema_shapes(payload: Any, names: list[str]) -> None:
    runtimes = registry()
    runtime = runtimes.get("seeded")
    assert runtimes.store_schemas(runtime, payload, 4.0) == names
    assert list(runtime.schemas) == names


def test_named_schema_payload_is_the_schema_key_when_present() -> None:
    runtimes = registry()
    runtime = runtimes.get("seeded")
    runtimes.store_schemas(runtime, [{"function_name": "b", "schema": {"x": 1}}], 4.0)
    assert runtime.schemas["b"].payload == {"x": 1}


def test_too_many_schemas_change_nothing() -> None:
    runtimes = registry()
    runtime = runtimes.get("seeded")
    with pytest.raises(InvalidArgument):
        runtimes.store_schemas(runtime, {f"f{i}": {} for i in range(1001)}, 4.0)
    assert runtime.schemas == {}


def test_the_token_is_not_in_the_runtime_repr() -> None:
    assert "seeded-token" not in repr(registry().get("seeded"))
