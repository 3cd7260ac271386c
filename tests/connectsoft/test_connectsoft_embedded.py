"""The embedded handle's ConnectSoft helpers, from a thread other than the emulator's."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from connectsoft_builders import seed_data

from emulator.embedded import run_in_thread

ENV = "env-9f1c2b7d"


def test_drive_the_platform_from_a_test_thread(tmp_path: Path) -> None:
    # Short durations keep the test quick; the wait below does not depend on them.
    phases = ("requested", "provisioning", "configuring", "rolling_out", "health_gating")
    durations = {f"deployment_{p}": 0.02 for p in (*phases, "promoting", "rolling_back")}
    seed = {"connectsoft": seed_data(durations=durations)}
    with run_in_thread(seed, state_dir=tmp_path, tls_enabled=False) as handle:
        connectsoft = handle.service("connectsoft")
        token = connectsoft.token(
            "portal", "portal-secret-value", scope="runtime.deployments.write runtime.health.read"
        )
        headers = {"Authorization": f"Bearer {token}"}
        base = handle.url("connectsoft")
        connectsoft.set_unhealthy(ENV, "module-reservations-api", "sql")
        health = httpx.get(
            f"{base}/runtime/services/module-reservations-api/health", headers=headers
        )
        assert health.json()["status"] == "Unhealthy"
        deployment = httpx.post(
            f"{base}/runtime/deployments",
            headers=headers,
            json={
                "tenantId": "connectsoft",
                "environmentId": ENV,
                "releaseRef": "r1",
                "components": [
                    {
                        "moduleId": "module-reservations-api",
                        "image": "acr.io/r:2.0.0",
                        "target": "aks",
                    }
                ],
            },
        ).json()
        # The unhealthy service fails the gate: wait for the rollback, never sleep.
        event = connectsoft.wait_event(
            lambda e: (
                e.correlation_id == deployment["deploymentId"]
                and e.event_type == "DeploymentRolledBack"
            )
        )
        assert event.payload["phase"] == "RolledBack"
        with pytest.raises(TimeoutError):
            connectsoft.wait_event(lambda e: e.event_type == "Never", timeout=0.2)
