"""Shared builders for the ConnectSoft tests (a helper module, not a test): a seed, a state on a
manual clock, callers. The fixtures are in conftest.py."""

from __future__ import annotations

from typing import Any

from emulator.connectsoft.core.access import Caller
from emulator.connectsoft.core.records import SequentialIds
from emulator.connectsoft.core.state import RuntimeState
from emulator.connectsoft.seed import SCOPES, ConnectSoftSeed
from emulator.platform.seedschema import Node

T0 = 1_781_200_800.0  # 2026-06-11T18:00:00Z, the time of the source's examples


def seed_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "clients": [
            {
                "client_id": "portal",
                "client_secret": "portal-secret-value",
                "tenants": ["connectsoft", "other"],
            }
        ],
        "tenants": [{"tenant_id": "connectsoft"}, {"tenant_id": "other"}],
        "environments": [
            {
                "environment_id": "env-9f1c2b7d",
                "tenant_id": "connectsoft",
                "project_id": "proj-booking-saas",
                "name": "booking-prod-weu",
                "stage": "prod",
                "compute_targets": ["aks", "container-apps"],
                "services": [
                    {
                        "service_id": "module-reservations-api",
                        "image": "acr.azurecr.io/reservations-api:1.4.2",
                        "replicas": 2,
                        "checks": [
                            {"name": "self", "status": "Healthy"},
                            {"name": "sql", "status": "Healthy", "duration_ms": 12},
                            {"name": "service-bus", "status": "Healthy", "duration_ms": 8},
                        ],
                    },
                    {
                        "service_id": "module-billing-worker",
                        "image": "acr.azurecr.io/billing-worker:1.4.1",
                        "target": "container-apps",
                    },
                ],
            },
            {
                "environment_id": "env-0therten",
                "tenant_id": "other",
                "project_id": "proj-other",
                "name": "other-dev",
                "stage": "dev",
                "services": [
                    {"service_id": "module-reservations-api", "image": "acr.azurecr.io/r:9.9.9"}
                ],
            },
        ],
        "durations": {
            "environment_provisioning": 5,
            "deployment_requested": 0,
            "deployment_provisioning": 1,
            "deployment_configuring": 1,
            "deployment_rolling_out": 1,
            "deployment_health_gating": 1,
            "deployment_promoting": 1,
            "deployment_rolling_back": 1,
        },
        "drift_rules": [
            {
                "rule_id": "image-lag",
                "environment_id": "env-9f1c2b7d",
                "service_id": "module-reservations-api",
                "kind": "ImageVersionMismatch",
                "actual": "1.4.1",
            }
        ],
    }
    data.update(overrides)
    return data


def make_seed(**overrides: Any) -> ConnectSoftSeed:
    return ConnectSoftSeed.from_node(Node(seed_data(**overrides), "connectsoft", "<test>"))


def make_state(**overrides: Any) -> RuntimeState:
    return RuntimeState.from_seed(make_seed(**overrides), SequentialIds(), T0)


def caller(tenant: str = "connectsoft", scopes: tuple[str, ...] = SCOPES) -> Caller:
    return Caller(subject="portal", tenant_id=tenant, scopes=frozenset(scopes))
