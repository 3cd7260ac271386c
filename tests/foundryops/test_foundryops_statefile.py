"""`--state-file` for FoundryOps: datasets, snapshots and balances survive a restart; bad data
is refused and changes nothing."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from foundryops_support import client, seed_with

from emulator.foundryops.persistence import read_snapshot
from emulator.platform.statefile import StateFileError, load_state, restore, save_state


async def test_datasets_and_balances_survive_a_restart(start_emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    seed = seed_with(mode="enforced", default_balance=10)
    first = await start_emulator(seed, services=("foundryops",))
    async with client(first) as http:
        created = (
            await http.post("/api/v2/datasets", json={"name": "Kept", "schema": {
                "company_name": "string", "domain": "string"}})
        ).json()  # fmt: skip
        dataset_id = created["dataset_id"]
        one = await http.post(
            f"/api/v2/datasets/{dataset_id}/append",
            json={"records": [{"company_name": "Kept Co", "domain": "kept.io"}]},
        )
        two = await http.post(
            f"/api/v2/datasets/{dataset_id}/append",
            json={"records": [{"company_name": "Second", "domain": "two.io"}]},
        )
        await http.post(
            f"/api/v2/datasets/{dataset_id}/activate",
            json={"snapshot_id": one.json()["snapshot_id"]},
        )
        await http.post("/api/v2/match/record", json={
            "snapshot_id": "dss_snapshot1", "record": {"company_name": "Acme"}})  # fmt: skip
    save_state(path, {"foundryops": first.emulator.services["foundryops"].snapshot()})

    second = await start_emulator(seed, services=("foundryops",))
    document = load_state(path)
    assert document is not None
    restore(path, second.emulator.services, document)
    async with client(second) as http:
        got = (await http.get(f"/api/v2/datasets/{dataset_id}")).json()
        matched = await http.post("/api/v2/match/record", json={
            "snapshot_id": two.json()["snapshot_id"], "record": {"domain": "two.io"}})  # fmt: skip
        active = await http.post("/api/v2/match/record", json={
            "dataset_id": dataset_id, "record": {"domain": "two.io"}})  # fmt: skip
    assert [s["records"] for s in got["snapshots"]] == [1, 2]
    assert got["active_snapshot_id"] == one.json()["snapshot_id"]
    assert matched.json()["matches"][0]["record"]["company_name"] == "Second"
    assert active.json()["matches"] == []  # the active snapshot has only the first row
    # 10 credits, 1 for the first match, 1 for each match after the restart.
    assert matched.headers["x-credits-remaining"] == "8"


async def test_bad_state_is_refused_and_changes_nothing(
    start_emulator: Any, tmp_path: Path
) -> None:
    running = await start_emulator(seed_with(), services=("foundryops",))
    instance = running.emulator.services["foundryops"]
    good = instance.snapshot()
    good["datasets"][0]["snapshots"][0]["rows"].append(["only one value"])
    before = dict(instance.ops.state.datasets.snapshots)
    with pytest.raises(StateFileError) as caught:
        restore(tmp_path / "s.json", running.emulator.services, {"foundryops": good})
    assert "rows[6]" in str(caught.value)
    assert instance.ops.state.datasets.snapshots == before


GOOD: dict[str, Any] = {
    "version": 1,
    "datasets": [
        {
            "dataset_id": "ds_kept",
            "name": "Kept",
            "schema": {"company_name": "string"},
            "created_at": 1.0,
            "owner_key": "dev",
            "active_snapshot_id": "dss_one",
            "snapshots": [{"snapshot_id": "dss_one", "created_at": 2.0, "rows": [["Acme"]]}],
        }
    ],
    "accounts": [{"account_id": "dev", "mode": "shadow", "balance": 5}],
}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("version",), 2, "foundryops.version: expected 1"),
        (("datasets", 0, "dataset_id"), "x", "datasets[0].dataset_id: expected an id"),
        (("datasets", 0, "snapshots", 0, "rows", 0), [1, 2], "rows[0]: expected a list of 1"),
        (("datasets", 0, "active_snapshot_id"), "dss_no", "not one of its snapshots"),
        (("accounts", 0, "mode"), "free", "accounts[0].mode: must be one of"),
        (("accounts", 0, "balance"), "5", "accounts[0].balance: expected a number"),
    ],
)
def test_malformed_saved_data_names_its_path(
    path: tuple[Any, ...], value: Any, message: str
) -> None:
    assert len(read_snapshot(GOOD, set()).datasets) == 1
    data = copy.deepcopy(GOOD)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        read_snapshot(data, set())
