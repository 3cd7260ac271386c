"""Jobs, idempotency, paging, workflow DAGs, run/node machines, providers (sync, table-driven)."""

from __future__ import annotations

from typing import Any

import pytest
from fabric_support import BOB, CAROL, EVE, dev, make_world

from emulator.fabric.core.config import PlaneConfig
from emulator.fabric.core.errors import (
    Conflict,
    FabricError,
    Forbidden,
    IllegalTransition,
    NotFound,
    ProviderFailed,
    ValidationFailed,
)
from emulator.fabric.core.jobs import (
    JOB_TRANSITIONS,
    JobEvent,
    JobStatus,
    apply_job,
    decode_cursor,
    parse_limit,
)
from emulator.fabric.core.providers import (
    ECHO,
    Catalog,
    Price,
    ProviderRequest,
    ProviderSpec,
    split_chunks,
)
from emulator.fabric.core.workflows import (
    NODE_TRANSITIONS,
    RUN_TRANSITIONS,
    NodeEvent,
    NodeStatus,
    RunEvent,
    RunStatus,
    apply_node,
    apply_run,
    parse_nodes,
)


def _job(org: str, **extra: Any) -> dict[str, Any]:
    return {"modality": "text", "input": {"prompt": "hi there"}, "organization_id": org, **extra}


def test_same_key_same_body_replays_and_other_body_conflicts() -> None:
    world = make_world()
    first, replayed = world.plane.submit_job(dev(CAROL), _job(world.acme, idempotency_key="k1"))
    assert not replayed
    events = len(world.plane.events)
    again, replayed = world.plane.submit_job(dev(CAROL), _job(world.acme, idempotency_key="k1"))
    assert replayed
    assert again is first
    assert len(world.plane.events) == events  # a replay emits nothing
    with pytest.raises(Conflict, match="idempotency key"):
        world.plane.submit_job(dev(CAROL), _job(world.acme, idempotency_key="k1", params={"x": 1}))
    assert len(world.plane.jobs) == 1


def test_header_key_counts_when_the_body_has_none() -> None:
    world = make_world()
    first, _ = world.plane.submit_job(dev(CAROL), _job(world.acme), header_key="h")
    again, replayed = world.plane.submit_job(dev(CAROL), _job(world.acme), header_key="h")
    assert replayed
    assert again.id == first.id


@pytest.mark.parametrize(
    ("principal", "body", "expected"),
    [
        (CAROL, {"modality": "video", "input": {}}, ValidationFailed),
        (CAROL, {"modality": "text", "input": "x"}, ValidationFailed),
        (CAROL, {"modality": "text"}, ValidationFailed),
        (CAROL, {"modality": "text", "input": {}, "model": "gpt-9"}, ValidationFailed),
        (CAROL, {"modality": "text", "input": {}, "tier": "gold"}, ValidationFailed),
        (CAROL, {"modality": "text", "input": {}, "params": {"delay_ms": -1}}, ValidationFailed),
        (BOB, {"modality": "text", "input": {}}, Forbidden),
        (EVE, {"modality": "text", "input": {}}, NotFound),
    ],
)
def test_job_submission_refusals(
    principal: str, body: dict[str, Any], expected: type[FabricError]
) -> None:
    world = make_world()
    with pytest.raises(expected):
        world.plane.submit_job(dev(principal), {**body, "organization_id": world.acme})
    assert not world.plane.jobs
    assert not world.plane.runs


def test_cursor_pages_neither_overlap_nor_skip() -> None:
    world = make_world()
    ids = []
    for index in range(5):
        job, _ = world.plane.submit_job(dev(CAROL), _job(world.acme))
        ids.append(job.id)
        if index % 2:
            world.clock.advance(1)  # some share a timestamp, some do not
    seen: list[str] = []
    cursor = None
    while True:
        page = world.plane.list_jobs(dev(CAROL), 2, cursor, None)
        seen += [job.id for job in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    created = [world.plane.jobs[i].created_at for i in seen]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, 50),
        ("", 50),
        ("7", 7),
        ("999", 200),
        ("0", ValidationFailed),
        ("x", ValidationFailed),
    ],
)
def test_limits(text: str | None, expected: int | type[Exception]) -> None:
    if isinstance(expected, int):
        assert parse_limit(text) == expected
    else:
        with pytest.raises(expected):
            parse_limit(text)


@pytest.mark.parametrize("cursor", ["!!!", "bm90LWEtY3Vyc29y", ""])
def test_malformed_cursor(cursor: str) -> None:
    with pytest.raises(ValidationFailed):
        decode_cursor(cursor)


def _node(key: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "operation": "ai.generate", "runtime": "provider", **extra}


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "non-empty"),
        ([_node("a"), _node("a")], "duplicate node key"),
        ([_node("a", depends_on=["ghost"])], "unknown node 'ghost'"),
        ([_node("a", depends_on=["b"]), _node("b", depends_on=["a"])], "cycle"),
        ([_node("a", depends_on=["a"])], "itself"),
        ([_node("a", runtime="shell")], "runtime"),
        ([_node("a", inputs={"p": "$context."})], "bad segment"),
        ([_node("a", inputs={"p": "$contextual"})], "not a \\$context"),
        ([_node("a", outputs={"o": "plain"})], "not a \\$context"),
        ([_node("a", outputs={"o": 3})], "must be a \\$context"),
        ([_node("a", config={"modality": "smell"})], "modality"),
        ([{"operation": "x"}], "key is required"),
    ],
)
def test_dag_validation(nodes: list[Any], message: str) -> None:
    with pytest.raises(ValidationFailed, match=message):
        parse_nodes(nodes, None)


def test_literal_inputs_and_context_paths_resolve() -> None:
    nodes, _ = parse_nodes(
        [_node("a", inputs={"prompt": "$context.user.q", "n": 3}, outputs={"text": "$context.r"})],
        None,
    )
    assert nodes[0].resolve_inputs({"user": {"q": "why"}}) == {"prompt": "why", "n": 3}


@pytest.mark.parametrize("status", list(RunStatus))
@pytest.mark.parametrize("event", list(RunEvent))
def test_run_machine_is_its_table(status: RunStatus, event: RunEvent) -> None:
    world = make_world()
    definition, _ = world.plane.upsert_definition(
        dev(CAROL), {"name": "w", "organization_id": world.acme, "nodes": [_node("a")]}
    )
    run, _ = world.plane.create_run(dev(CAROL), {"workflow_definition_id": definition.id})
    run.status = status  # arranging the state under test
    target = RUN_TRANSITIONS.table.get((status, event))
    if target is None:
        with pytest.raises(IllegalTransition):
            apply_run(run, event, 0.0)
        assert run.status is status
    else:
        apply_run(run, event, 0.0)
        assert run.status is target


@pytest.mark.parametrize("status", list(NodeStatus))
@pytest.mark.parametrize("event", list(NodeEvent))
def test_node_machine_is_its_table(status: NodeStatus, event: NodeEvent) -> None:
    world = make_world()
    definition, _ = world.plane.upsert_definition(
        dev(CAROL), {"name": "w", "organization_id": world.acme, "nodes": [_node("a")]}
    )
    run, _ = world.plane.create_run(dev(CAROL), {"workflow_definition_id": definition.id})
    node = run.nodes["a"]
    node.status = status  # arranging the state under test
    target = NODE_TRANSITIONS.table.get((status, event))
    if target is None:
        with pytest.raises(IllegalTransition):
            apply_node(node, event, 0.0)
        assert node.status is status
    else:
        apply_node(node, event, 0.0)
        assert node.status is target


def test_upsert_keeps_the_id_and_bumps_the_version() -> None:
    world = make_world()
    body = {"name": "w", "organization_id": world.acme, "nodes": [_node("a")]}
    first, created = world.plane.upsert_definition(dev(CAROL), body)
    assert created
    second, created = world.plane.upsert_definition(
        dev(CAROL), {**body, "nodes": [_node("a"), _node("b", depends_on=["a"])]}
    )
    assert not created
    assert second.id == first.id
    assert second.version == 2


def test_failure_skips_dependents_and_progress_counts_them() -> None:
    world = make_world()
    plane = world.plane
    nodes = [_node("a"), _node("b", depends_on=["a"]), _node("c", depends_on=["b"]), _node("d")]
    definition, _ = plane.upsert_definition(
        dev(CAROL), {"name": "w", "organization_id": world.acme, "nodes": nodes}
    )
    run, _ = plane.create_run(dev(CAROL), {"workflow_definition_id": definition.id})
    plane.start_run(dev(CAROL), run.id)
    assert run.ready_keys() == ["a", "d"]
    plane.node_ready(run, "a")
    plane.node_start(run, "a")
    assert run.progress().current_task == "a"
    plane.node_fail(run, "a", "boom")
    assert [run.nodes[k].status for k in "bc"] == [NodeStatus.SKIPPED] * 2
    plane.node_ready(run, "d")
    plane.node_start(run, "d")
    plane.node_complete(run, "d", plane.catalog.plan(plane.node_request(run, "d"), lambda: 0.0))
    plane.run_finish(run)
    assert run.status is RunStatus.FAILED
    assert run.error == "node a failed: boom"
    progress = run.progress()
    assert (progress.total_tasks, progress.completed_tasks) == (4, 3)
    assert progress.percentage == 75.0
    names = [e.name for e in plane.events if e.run_id == run.id]
    assert names.count("workflow.node.skipped") == 2
    assert names[-1] == "workflow.run.failed"


@pytest.mark.parametrize(
    ("status", "expected"),
    [("pending", None), ("running", None), ("cancelled", "unchanged"), ("completed", Conflict)],
)
def test_cancel_rules(status: str, expected: str | type[Exception] | None) -> None:
    world = make_world()
    plane = world.plane
    definition, _ = plane.upsert_definition(
        dev(CAROL), {"name": "w", "organization_id": world.acme, "nodes": [_node("a")]}
    )
    run, _ = plane.create_run(dev(CAROL), {"workflow_definition_id": definition.id})
    if status != "pending":
        plane.start_run(dev(CAROL), run.id)
    if status == "cancelled":
        plane.cancel_run(dev(CAROL), run.id)
    if status == "completed":
        plane.node_ready(run, "a")
        plane.node_start(run, "a")
        plane.node_complete(run, "a", plane.catalog.plan(plane.node_request(run, "a"), lambda: 0))
        plane.run_finish(run)
    before = len(plane.events)
    if isinstance(expected, type):
        with pytest.raises(expected):
            plane.cancel_run(dev(CAROL), run.id)
        return
    _, changed = plane.cancel_run(dev(CAROL), run.id)
    assert run.status is RunStatus.CANCELLED
    assert changed is (expected is None)
    if expected == "unchanged":
        assert len(plane.events) == before


# Providers ---------------------------------------------------------------------------------

CHEAP = ProviderSpec("cheap", ("text",), ("cheap-1",), price=Price(0.001, 0.001))
DEAR = ProviderSpec("dear", ("text", "image"), ("dear-1",), tier="premium", price=Price(1, 1))
SICK = ProviderSpec("sick", ("text",), ("sick-1",), price=Price(0.0, 0.0), healthy=False)
CATALOG = Catalog((ECHO, CHEAP, DEAR, SICK), {("echo", "echo"): Price(0.01, 0.01)})


@pytest.mark.parametrize(
    ("modality", "model", "tier", "expected"),
    [
        ("text", None, None, "cheap"),  # cheapest healthy (sick is free but unhealthy)
        ("text", None, "premium", "dear"),
        ("image", None, None, "echo"),  # echo is cheaper than dear for images
        ("image", None, "premium", "dear"),
        ("embedding", None, "premium", ValidationFailed),
        ("text", "dear-1", None, "dear"),  # model forces the provider
        ("text", "sick-1", None, ProviderFailed),
        ("image", "cheap-1", None, ValidationFailed),
        ("text", "nope", None, ValidationFailed),
    ],
)
def test_routing(
    modality: str, model: str | None, tier: str | None, expected: str | type[Exception]
) -> None:
    request = ProviderRequest(modality, {"prompt": "a b c"}, model, tier)
    if isinstance(expected, str):
        assert CATALOG.route(request).provider.provider_id == expected
    else:
        with pytest.raises(expected):
            CATALOG.route(request)


@pytest.mark.parametrize(
    ("modality", "payload", "output"),
    [
        ("text", {"prompt": "hello  world"}, {"text": "hello  world"}),
        ("text", {"a": 1}, {"text": '{"a":1}'}),
        ("image", {"prompt": "cat"}, {"echo": {"prompt": "cat"}}),
        ("audio", {"x": [1]}, {"echo": {"x": [1]}}),
    ],
)
def test_echo_is_deterministic(modality: str, payload: Any, output: dict[str, Any]) -> None:
    plan = Catalog().plan(ProviderRequest(modality, payload), lambda: 0.9)
    assert plan.output == output
    assert plan.provider_id == "echo"
    assert plan.failure is None


def test_echo_embedding_is_eight_stable_floats() -> None:
    a = Catalog().plan(ProviderRequest("embedding", {"prompt": "x"}), lambda: 0.0).output
    b = Catalog().plan(ProviderRequest("embedding", {"prompt": "x"}), lambda: 0.7).output
    assert a == b
    assert len(a["embedding"]) == 8
    assert all(-1.0 <= v <= 1.0 for v in a["embedding"])


@pytest.mark.parametrize("text", ["one", "one two  three", "  lead", "trail  ", ""])
def test_chunks_join_back(text: str) -> None:
    assert "".join(split_chunks(text)) == text


def test_forced_and_scripted_failures() -> None:
    forced = Catalog().plan(ProviderRequest("text", {"prompt": "x"}, params={"fail": True}), float)
    assert forced.failure == "echo: forced failure"
    flaky = ProviderSpec("flaky", ("text",), ("f-1",), failure_rate=0.5)
    catalog = Catalog((flaky,))
    assert catalog.plan(ProviderRequest("text", {}), lambda: 0.4).failure is not None
    assert catalog.plan(ProviderRequest("text", {}), lambda: 0.6).failure is None


def test_tokens_and_prices() -> None:
    plan = CATALOG.plan(ProviderRequest("text", {"prompt": "a b c"}, model="dear-1"), float)
    assert (plan.input_tokens, plan.output_tokens) == (3, 3)
    assert plan.cost_usd == 6.0


@pytest.mark.parametrize("status", list(JobStatus))
@pytest.mark.parametrize("event", list(JobEvent))
def test_job_machine_is_its_table(status: JobStatus, event: JobEvent) -> None:
    world = make_world()
    job, _ = world.plane.submit_job(
        dev(CAROL), {"modality": "text", "input": {}, "organization_id": world.acme}
    )
    job.status = status  # arranging the state under test
    target = JOB_TRANSITIONS.table.get((status, event))
    if target is None:
        with pytest.raises(IllegalTransition):
            apply_job(job, event, 1.0)
        assert job.status is status
    else:
        apply_job(job, event, 1.0)
        assert job.status is target
        assert job.updated_at == 1.0


def test_old_finished_runs_are_forgotten_past_the_retention() -> None:
    world = make_world(config=PlaneConfig(jwt_secret="s" * 32, run_retention=2))
    plane = world.plane
    body = {"modality": "text", "input": {}, "organization_id": world.acme}
    first, _ = plane.submit_job(dev(CAROL), {**body, "idempotency_key": "a"})
    run = plane.runs[first.workflow_run_id]
    second, _ = plane.submit_job(dev(CAROL), body)
    third, _ = plane.submit_job(dev(CAROL), body)
    assert len(plane.runs) == 3  # nothing finished yet: nothing is forgotten
    plane.run_start(run)
    plane.node_ready(run, "generate")
    plane.node_start(run, "generate")
    plane.node_fail(run, "generate", "x")
    plane.run_finish(run)
    fourth, _ = plane.submit_job(dev(CAROL), body)
    assert first.id not in plane.jobs
    assert run.id not in plane.runs
    assert {second.id, third.id, fourth.id} <= set(plane.jobs)
    with pytest.raises(NotFound):
        plane.get_job(dev(CAROL), first.id)
    again, replayed = plane.submit_job(dev(CAROL), {**body, "idempotency_key": "a"})
    assert not replayed  # its key went with it
    assert again.id != first.id
