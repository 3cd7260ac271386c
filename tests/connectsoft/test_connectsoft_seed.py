"""The `connectsoft:` seed block: defaults, a full block, and errors with exact YAML paths."""

from __future__ import annotations

from typing import Any

import pytest
from connectsoft_builders import make_seed, seed_data

from emulator.connectsoft.seed import SCOPES, ConnectSoftSeed
from emulator.platform.seedschema import Node, SeedError


def read(data: Any) -> ConnectSoftSeed:
    return ConnectSoftSeed.from_node(Node(data, "connectsoft", "seed.yaml"))


def test_empty_block_has_defaults() -> None:
    seed = ConnectSoftSeed.from_node(None)
    assert seed.clients == ()
    assert seed.environments == ()
    assert seed.durations.environment_provisioning == 5.0
    assert read({}).event_retention == 10_000


def test_full_block() -> None:
    seed = make_seed(
        governance=[{"operation": "deployments.write", "decision": "require_approval"}],
        faults={
            "fail_next_provisioning": 1,
            "unhealthy_services": [
                {"environment_id": "env-9f1c2b7d", "service_id": "module-billing-worker"}
            ],
        },
    )
    (client,) = seed.clients
    assert client.scopes == SCOPES
    assert "portal-secret-value" not in repr(client)
    env = seed.environments[0]
    assert env.stage == "prod"
    assert [c.duration_ms for c in env.services[0].checks] == [None, 12, 8]
    assert seed.governance[0].stage == "prod"
    assert seed.faults.fail_next_provisioning == 1


def _env(**changes: Any) -> dict[str, Any]:
    env = dict(seed_data()["environments"][0])
    env.update(changes)
    return env


BAD = [
    (
        {"clients": [{"client_id": "a", "client_secret": "s"}]},
        "connectsoft.clients[0].tenants",
        "required",
    ),
    (
        {
            "clients": [
                {
                    "client_id": "a",
                    "client_secret": "s",
                    "tenants": ["x"],
                    "scopes": ["runtime.all"],
                }
            ]
        },
        "connectsoft.clients[0].scopes[0]",
        "must be one of",
    ),
    ({"environments": [_env(stage="qa")]}, "connectsoft.environments[0].stage", "must be one of"),
    (
        {"environments": [_env(environment_id="nine")]},
        "connectsoft.environments[0].environment_id",
        "not a valid id",
    ),
    (
        {"environments": [_env(), _env(name="x")]},
        "connectsoft.environments[1]",
        "duplicate environment_id",
    ),
    (
        {"environments": [_env(tenant_id="ghost")]},
        "connectsoft.environments[0]",
        "no tenant binding",
    ),
    (
        {"environments": [_env(services=[{"service_id": "s", "image": "acr.io/s"}])]},
        "connectsoft.environments[0].services[0].image",
        "needs a tag",
    ),
    (
        {
            "environments": [
                _env(services=[{"service_id": "s", "image": "a/s:1", "target": "functions"}])
            ]
        },
        "connectsoft.environments[0].services[0]",
        "not a compute target",
    ),
    (
        {"durations": {"deployment_promoting": -1}},
        "connectsoft.durations.deployment_promoting",
        "at least 0",
    ),
    (
        {"durations": {"deployment_coffee": 1}},
        "connectsoft.durations.deployment_coffee",
        "unknown key",
    ),
    ({"governance": [{"decision": "deny"}]}, "connectsoft.governance[0]", "needs a reason"),
    (
        {"governance": [{"decision": "maybe"}]},
        "connectsoft.governance[0].decision",
        "must be one of",
    ),
    (
        {
            "drift_rules": [
                {
                    "rule_id": "r",
                    "environment_id": "env-9f1c2b7d",
                    "service_id": "ghost",
                    "kind": "ImageVersionMismatch",
                    "actual": "1",
                }
            ]
        },
        "connectsoft.drift_rules[0]",
        "not seeded",
    ),
    (
        {
            "drift_rules": [
                {
                    "rule_id": "r",
                    "environment_id": "env-9f1c2b7d",
                    "service_id": "module-billing-worker",
                    "kind": "ReplicaCountMismatch",
                    "actual": "many",
                }
            ]
        },
        "connectsoft.drift_rules[0].actual",
        "whole number",
    ),
    (
        {
            "faults": {
                "unhealthy_services": [{"environment_id": "env-9f1c2b7d", "service_id": "ghost"}]
            }
        },
        "connectsoft.faults.unhealthy_services[0]",
        "not seeded",
    ),
    ({"event_retention": 0}, "connectsoft.event_retention", "at least 1"),
]


@pytest.mark.parametrize(("changes", "path", "message"), BAD)
def test_errors_name_the_path(changes: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(SeedError) as caught:
        read(seed_data(**changes))
    assert caught.value.path == path
    assert message in caught.value.message
    assert caught.value.source == "seed.yaml"
