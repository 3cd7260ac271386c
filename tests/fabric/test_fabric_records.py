"""Event log, assets, usage, audit, authz checks and the seed block (sync, table-driven)."""

from __future__ import annotations

import datetime
import random
from typing import Any

import pytest
from fabric_support import ALICE, BOB, CAROL, DAVE, EVE, Ids, dev, make_world

from emulator.fabric.api.envelope import rfc3339
from emulator.fabric.core.assets import AssetStore
from emulator.fabric.core.auth import AuthMethod, Caller
from emulator.fabric.core.errors import PayloadTooLarge, ValidationFailed
from emulator.fabric.core.events import EventDraft, EventLog
from emulator.fabric.core.ledger import UsageLedger, UsageRecord
from emulator.fabric.core.tenancy import DEFAULT_ORG_ID
from emulator.fabric.seed import FabricSeed, populate
from emulator.platform.seedschema import Node, SeedError


def test_event_log_keeps_a_bounded_contiguous_window() -> None:
    log = EventLog(Ids(), retention=3)
    events = [log.append(EventDraft("job.created"), float(i)) for i in range(5)]
    assert [e.sequence for e in log] == [3, 4, 5]
    assert [e.kind for e in log] == ["job_created"] * 3
    assert log.sequence_of(events[0].id) is None  # dropped
    assert log.resume_point(events[3].id) == 4
    assert log.resume_point(events[0].id) == 0  # unknown or dropped: replay what is kept
    assert log.resume_point("nope") == 0
    assert [e.sequence for e in log.after(3)] == [4, 5]
    assert [e.sequence for e in log.after(0)] == [3, 4, 5]


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"abc", b"def"], None),
        ([b"x" * 11], PayloadTooLarge),
        ([b"x" * 6, b"y" * 6], PayloadTooLarge),
        ([], ValidationFailed),
    ],
)
def test_asset_bounds(chunks: list[bytes], expected: type[Exception] | None) -> None:
    store = AssetStore(max_asset_bytes=10, max_total_bytes=20)
    upload = store.begin("org", "f.txt", "text/plain", ALICE)
    if expected is None:
        for chunk in chunks:
            upload.add(chunk)
        asset = upload.finish("a1", 0.0)
        assert b"".join(asset.iter_bytes()) == b"abcdef"
        assert (asset.kind, asset.size_bytes) == ("text", 6)
        assert store.total_bytes == 6
    else:

        def feed() -> None:
            for chunk in chunks:
                upload.add(chunk)
            upload.finish("a1", 0.0)

        with pytest.raises(expected):
            feed()
        assert not store.assets
        assert store.total_bytes == 0


def test_a_full_store_refuses_more() -> None:
    store = AssetStore(max_asset_bytes=10, max_total_bytes=15)
    first = store.begin("org", "a", "image/png", ALICE)
    first.add(b"x" * 10)
    first.finish("a1", 0.0)
    second = store.begin("org", "b", "image/png", ALICE)
    with pytest.raises(PayloadTooLarge, match="full"):
        second.add(b"y" * 6)


def test_usage_rolls_up_per_provider_and_principal() -> None:
    world = make_world()
    plane = world.plane
    for prompt in ("a b", "c d e"):
        plan, org = plane.plan_provider_call(
            dev(CAROL),
            {"modality": "text", "input": {"prompt": prompt}, "organization_id": world.acme},
        )
        plane.record_usage(plan, organization_id=org, principal_id=CAROL, api_key_id=None)
    summary = plane.org_usage(dev(CAROL), world.acme, None, None)
    assert summary.total_provider_calls == 2
    assert summary.total_input_tokens == 5
    assert [(b.key, b.calls) for b in summary.by_provider] == [("echo", 2)]
    assert [(b.key, b.calls) for b in summary.by_principal] == [(CAROL, 2)]
    records = plane.org_usage_records(dev(CAROL), world.acme)
    assert [r.input_tokens for r in records] == [3, 2]  # newest first


@pytest.mark.parametrize(
    ("principal", "check", "allowed", "reason"),
    [
        (BOB, {"action": "read", "resource": "organization:{acme}"}, True, None),
        (BOB, {"action": "jobs:write", "resource": "organization:{acme}"}, False, "role viewer"),
        (CAROL, {"action": "jobs:write", "resource": "organization:{acme}"}, True, None),
        (CAROL, {"action": "teams:manage", "resource": "organization:{acme}"}, False, "role"),
        (
            DAVE,
            {"action": "admin", "resource_type": "organization", "resource_id": "{acme}"},
            True,
            None,
        ),
        (EVE, {"action": "read", "resource": "organization:{acme}"}, False, "not found"),
        (ALICE, {"action": "read", "resource": "job:missing"}, False, "not found"),
        (ALICE, {"action": "read"}, False, "no resource"),
        (ALICE, {"action": "x:fly", "resource": "organization:{acme}"}, False, "unknown action"),
    ],
)
def test_authz_check(
    principal: str, check: dict[str, Any], allowed: bool, reason: str | None
) -> None:
    world = make_world()
    filled = {k: v.replace("{acme}", world.acme) for k, v in check.items()}
    got_allowed, got_reason, _, _ = world.plane.check_permission(dev(principal), filled)
    assert got_allowed is allowed
    if reason is None:
        assert got_reason is None
    else:
        assert got_reason is not None
        assert reason in got_reason


def test_authz_check_is_capped_by_key_scopes() -> None:
    world = make_world()
    key, _ = world.plane.create_api_key(
        dev(DAVE), {"name": "k", "organization_id": world.acme, "scopes": ["jobs:read"]}
    )
    caller = Caller(DAVE, AuthMethod.API_KEY, key)
    assert world.plane.check_permission(caller, {"action": "jobs:read"})[0] is True
    assert world.plane.check_permission(caller, {"action": "jobs:write"})[0] is False


@pytest.mark.parametrize(
    "body", [{"checks": "x"}, {"checks": [{"resource": "organization:x"}]}, {"checks": [{}] * 101}]
)
def test_batch_refusals(body: dict[str, Any]) -> None:
    world = make_world()
    with pytest.raises(ValidationFailed):
        world.plane.check_batch(dev(ALICE), body)


def test_audit_covers_mutations_and_never_holds_a_raw_key() -> None:
    world = make_world()
    _, raw = world.plane.create_api_key(dev(DAVE), {"name": "k", "organization_id": world.acme})
    world.plane.submit_job(
        dev(CAROL), {"modality": "text", "input": {}, "organization_id": world.acme}
    )
    actions = [e.action for e in world.plane.org_audit(dev(DAVE), world.acme)]
    assert actions == ["job.create", "api_key.create", "organization.create"]
    assert raw not in repr(list(world.plane.audit.entries))


# Seed --------------------------------------------------------------------------------------

GOOD_SEED: dict[str, Any] = {
    "production": True,
    "jwt_secret": "a-very-long-secret-value-for-hs256!",
    "organizations": [
        {
            "slug": "globex",
            "members": [{"principal_id": ALICE, "role": "owner"}, {"principal_id": BOB}],
            "teams": [{"slug": "core", "members": [{"principal_id": BOB, "role": "admin"}]}],
            "api_keys": [
                {
                    "name": "ci",
                    "key": "fab_" + "A" * 32,
                    "principal_id": ALICE,
                    "scopes": ["jobs:read"],
                }
            ],
        },
        {"slug": "default", "members": [{"principal_id": BOB, "role": "admin"}]},
    ],
    "providers": [
        {
            "id": "fast",
            "modalities": ["text"],
            "models": ["fast-1"],
            "tier": "premium",
            "latency_ms": {"min_ms": 10, "max_ms": 20},
            "tokens_per_second": 50,
            "failure_rate": 0.1,
        }
    ],
    "prices": [{"provider": "fast", "model": "fast-1", "input_per_token": 0.5}],
    "executor": {"per_run_concurrency": 2, "retry_backoff_ms": 5},
    "events": {"retention": 50, "subscriber_buffer": 8, "keepalive_seconds": 1},
}


def test_a_good_seed_populates_the_plane() -> None:
    seed = FabricSeed.from_node(Node(GOOD_SEED, "fabric", "seed.yaml"))
    assert seed.production
    assert seed.engine.per_run_concurrency == 2
    assert seed.engine.subscriber_buffer == 8
    assert seed.keepalive_seconds == 1
    assert "a-very-long-secret-value-for-hs256!" not in repr(seed)
    world = make_world(catalog=seed.catalog, config=seed.plane)
    populate(world.plane, seed)
    caller = world.plane.authenticate("Bearer fab_" + "A" * 32, None, public=False)
    assert caller is not None
    assert caller.principal_id == ALICE
    assert caller.api_key is not None
    assert caller.api_key.scopes == ("jobs:read",)
    assert world.plane.tenancy.role_in(BOB, DEFAULT_ORG_ID) is not None
    assert world.plane.events.retention == 50
    fast = next(p for p in seed.catalog.providers if p.provider_id == "fast")
    assert seed.catalog.price_of(fast, "fast-1").input_per_token == 0.5


@pytest.mark.parametrize(
    ("patch", "path", "message"),
    [
        ({"jwt_secret": "short"}, "fabric.jwt_secret", "32 bytes"),
        ({"nonsense": 1}, "fabric.nonsense", "unknown key"),
        (
            {"organizations": [{"slug": "Bad Slug"}]},
            "fabric.organizations[0].slug",
            "not a slug",
        ),
        (
            {"organizations": [{"slug": "x1", "members": [{"principal_id": "nope"}]}]},
            "fabric.organizations[0].members[0].principal_id",
            "UUID",
        ),
        (
            {
                "organizations": [
                    {"slug": "x1", "api_keys": [{"name": "k", "key": "bad", "principal_id": ALICE}]}
                ]
            },
            "fabric.organizations[0].api_keys[0].key",
            "fab_",
        ),
        (
            {
                "organizations": [
                    {
                        "slug": "x1",
                        "api_keys": [
                            {"name": "k", "key": "fab_" + "B" * 32, "principal_id": ALICE}
                        ],
                    }
                ]
            },
            "fabric.organizations[0].api_keys[0].principal_id",
            "not a member",
        ),
        (
            {"providers": [{"id": "p", "modalities": ["smell"], "models": ["m"]}]},
            "fabric.providers[0].modalities[0]",
            "must be one of",
        ),
        (
            {
                "providers": [
                    {"id": "p", "modalities": ["text"], "models": ["m"], "failure_rate": 2}
                ]
            },
            "fabric.providers[0].failure_rate",
            "between 0 and 1",
        ),
        (
            {"providers": [{"id": "echo", "modalities": ["text"], "models": ["m"]}]},
            "fabric.providers[0].id",
            "built in",
        ),
        ({"prices": [{"provider": "ghost", "model": "m"}]}, "fabric.prices[0]", "no provider"),
        (
            {"executor": {"per_run_concurrency": 0}},
            "fabric.executor.per_run_concurrency",
            "at least 1",
        ),
    ],
)
def test_seed_errors_name_the_yaml_path(patch: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SeedError) as caught:
        FabricSeed.from_node(Node(patch, "fabric", "seed.yaml"))
    assert caught.value.path == path
    assert message in caught.value.message


def test_per_job_and_run_indexes_follow_retention() -> None:
    log = EventLog(Ids(), retention=3)
    log.append(EventDraft("job.created", job_id="j1", run_id="r1"), 0.0)
    log.append(EventDraft("workflow.run.started", run_id="r1"), 1.0)
    log.append(EventDraft("job.created", job_id="j2"), 2.0)
    log.append(EventDraft("job.started", job_id="j1"), 3.0)  # drops j1's first event
    assert [e.name for e in log.of_job("j1")] == ["job.started"]
    assert [e.name for e in log.of_run("r1")] == ["workflow.run.started"]
    log.append(EventDraft("job.started", job_id="j2"), 4.0)  # drops r1's last event
    assert list(log.of_run("r1")) == []
    assert [e.sequence for e in log.of_job("j2")] == [3, 5]


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("a.txt", "text\r\nx-injected: 1"),
        ("a.txt", "no-slash"),
        ("a\nb", "text/plain"),
        ("", "a/b"),
    ],
)
def test_asset_metadata_that_would_break_headers_is_refused(
    filename: str, content_type: str
) -> None:
    store = AssetStore()
    with pytest.raises(ValidationFailed):
        store.begin("org", filename, content_type, ALICE)


def _usage(record_id: str, job_id: str | None) -> UsageRecord:
    return UsageRecord(
        record_id, "org", "p", None, job_id, None, None, "echo", "echo-1", "text", 1, 2, 0.0, 0.0
    )


def test_a_jobs_usage_is_found_by_id_and_trimmed_with_the_ledger() -> None:
    ledger = UsageLedger(limit=3)
    for record_id, job_id in [("1", "a"), ("2", "b"), ("3", None), ("4", "a"), ("5", "a")]:
        ledger.add(_usage(record_id, job_id))
    # Records 1 and 2 left the ledger: job b has none left, job a keeps 4 and 5.
    assert [r.id for r in ledger.for_job("a")] == ["4", "5"]
    assert ledger.for_job("b") == []
    assert [r.id for r in ledger.records] == ["3", "4", "5"]


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (None, None),
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1_800_000_000.25, "2027-01-15T08:00:00.250000Z"),
        (1_764_866_400.000001, "2025-12-04T16:40:00.000001Z"),
    ],
)
def test_timestamps_are_rfc3339_utc_with_microseconds_and_z(
    epoch: float | None, text: str | None
) -> None:
    assert rfc3339(epoch) == text


def test_timestamps_match_datetime_to_the_microsecond_however_they_round() -> None:
    # The cached second and the rounded fraction must give datetime's string exactly, also
    # where the fraction rounds up into the next second and across a cached second.
    rng = random.Random(7)
    epochs = [rng.uniform(0, 4e9) for _ in range(20_000)]
    epochs += [1.9999995, 1.0000005, 59.9999999, 1_764_866_399.9999996, 1_733_400_000.1234565]
    epochs += [-0.5, -1.0000005, 0.0]
    for epoch in sorted(epochs) + epochs:
        moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
        assert rfc3339(epoch) == moment.isoformat(timespec="microseconds")[:-6] + "Z", epoch
