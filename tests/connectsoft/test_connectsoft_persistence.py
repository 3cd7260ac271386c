"""The durable state (`--state-file`): a round trip keeps everything, bad data changes nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from connectsoft_builders import T0, caller, make_seed, make_state
from test_connectsoft_core_state import DEPLOY, PROVISION, SCALE

from emulator.connectsoft import persistence
from emulator.connectsoft.core.machines import DeploymentPhase, EnvironmentStatus
from emulator.connectsoft.core.records import SequentialIds
from emulator.connectsoft.core.state import RuntimeState
from emulator.connectsoft.service import ConnectSoftService
from emulator.platform.clock import ManualClock, Randomness
from emulator.platform.service import Endpoints, ServiceContext
from emulator.platform.settings import Settings
from emulator.platform.statefile import StateFileError, collect, load_state, restore, save_state

ENV = "env-9f1c2b7d"


def busy_state() -> RuntimeState:
    state = make_state(governance=[{"operation": "secrets.write", "decision": "require_approval"}])
    state.provision(caller(), PROVISION, T0)
    state.publish_configuration(
        caller(), {"tenantId": "connectsoft", "environmentId": ENV, "name": "a"}, T0
    )
    state.apply_scaling(caller(), SCALE, T0)
    state.apply_drift_rule("image-lag", T0 + 1)
    state.set_unhealthy(ENV, "module-billing-worker", "self", True, T0 + 1)
    state.create_deployment(caller(), {**DEPLOY, "components": DEPLOY["components"][:1]}, T0 + 2)
    state.advance(T0 + 4.5)  # the deployment is RollingOut, the new environment Provisioning
    with pytest.raises(Exception, match="approval"):
        state.bind_secrets(
            caller(),
            {
                "tenantId": "connectsoft",
                "environmentId": ENV,
                "serviceId": "module-reservations-api",
                "secrets": [{"name": "s", "keyVaultRef": "https://kv1.vault.azure.net/secrets/s"}],
            },
            T0 + 4,
        )
    return state


def round_trip(state: RuntimeState) -> RuntimeState:
    data = json.loads(json.dumps(persistence.snapshot(state)))
    return persistence.read_snapshot(data, state.seed, SequentialIds())


def test_round_trip_keeps_everything() -> None:
    state = busy_state()
    restored = round_trip(state)
    assert persistence.snapshot(restored) == persistence.snapshot(state)
    assert restored.next_due() == state.next_due()


def test_restored_state_moves_on() -> None:
    restored = round_trip(busy_state())
    (deployment,) = restored.deployments.values()
    assert deployment.phase is DeploymentPhase.ROLLING_OUT
    restored.advance(T0 + 100)
    assert deployment.phase is DeploymentPhase.COMPLETED
    new_env = next(
        e
        for e in restored.environments.values()
        if e.environment_id != ENV and e.name == "booking-dev-weu"
    )
    assert new_env.status is EnvironmentStatus.ACTIVE
    # Lookups were rebuilt: health by service id and the pending approval still work.
    assert restored.health(caller(), "module-billing-worker").health_status == "Unhealthy"
    (approval_id,) = restored.approvals
    restored.grant_approval(approval_id, T0 + 200)


@pytest.mark.parametrize(
    ("mangle", "path"),
    [
        (lambda d: {**d, "version": 99}, "connectsoft.version"),
        (lambda d: {**d, "environments": "nope"}, "connectsoft.environments"),
        (
            lambda d: {**d, "deployments": [{**d["deployments"][0], "phase": "Sideways"}]},
            "connectsoft.deployments[0].phase",
        ),
        (
            lambda d: {**d, "deployments": [{**d["deployments"][0], "environmentId": "env-x"}]},
            "connectsoft.deployments[0].environmentId",
        ),
        (
            lambda d: {**d, "faults": {"failNextProvisioning": "1", "failNextHealthGate": 0}},
            "connectsoft.faults.failNextProvisioning",
        ),
        (
            lambda d: {**d, "environments": [{**d["environments"][0], "history": [[1, 2]]}]},
            "connectsoft.environments[0].history[0]",
        ),
        (lambda d: {**d, "extra": 1}, "connectsoft.extra"),
        (lambda d: [], "connectsoft"),
    ],
)
def test_bad_data_is_refused_with_its_path(mangle: Any, path: str) -> None:
    state = busy_state()
    data = json.loads(json.dumps(persistence.snapshot(state)))
    with pytest.raises(ValueError, match=r"^" + re.escape(path) + r": "):
        persistence.read_snapshot(mangle(data), state.seed, SequentialIds())


def test_through_the_platform_state_file_hooks(tmp_path: Path) -> None:
    context = ServiceContext(
        Settings(state_dir=tmp_path), ManualClock(T0), Randomness(), Endpoints()
    )
    seed = make_seed()
    first = ConnectSoftService().start(seed, context)
    first.engine.call(lambda now: first.state.provision(caller(), PROVISION, now))
    document = collect({"connectsoft": first})
    second = ConnectSoftService().start(seed, context)
    restore(tmp_path / "state.json", {"connectsoft": second}, json.loads(json.dumps(document)))
    assert {e.name for e in second.state.environments.values()} >= {"booking-dev-weu"}
    before = persistence.snapshot(second.state)
    with pytest.raises(StateFileError, match="connectsoft"):
        restore(tmp_path / "state.json", {"connectsoft": second}, {"connectsoft": {"version": 1}})
    assert persistence.snapshot(second.state) == before


def test_finished_deployments_are_rendered_off_the_loop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    state = busy_state()
    (first,) = state.deployments.values()
    one = {**DEPLOY, "components": DEPLOY["components"][:1]}
    state.advance(T0 + 100)  # the first finishes, then a second one runs to the end...
    state.create_deployment(caller(), one, T0 + 101)
    state.advance(T0 + 200)
    state.create_deployment(caller(), one, T0 + 201)  # ...and a third is in progress
    phases = [d.phase for d in state.deployments.values()]
    assert phases.count(DeploymentPhase.COMPLETED) == 2
    expected = persistence.snapshot(state)
    rendered: list[str] = []
    real = persistence._deployment
    monkeypatch.setattr(
        persistence, "_deployment", lambda d: rendered.append(d.phase.value) or real(d)
    )
    finish = persistence.capture(state, lazy=True)
    assert rendered == ["Requested"]  # on the loop: only the one that may still change
    path = tmp_path / "state.json"
    save_state(path, {"connectsoft": finish})
    assert sorted(rendered) == ["Completed", "Completed", "Requested"]
    assert load_state(path) == {"connectsoft": json.loads(json.dumps(expected))}
    assert first.phase is DeploymentPhase.COMPLETED
