"""`--state-file` for Fabric: tenants, keys (hashes) and definitions survive; bad data changes
nothing (sync)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fabric_server import ACME, SEED
from fabric_support import ALICE, CAROL, DAVE, EVE, dev, make_world

from emulator.embedded import run_in_thread
from emulator.fabric.core.tenancy import Role
from emulator.fabric.persistence import restore, snapshot
from emulator.platform.statefile import load_state
from emulator.platform.statefile import restore as restore_services


def _populated() -> tuple[dict[str, Any], str, str, str]:
    world = make_world()
    plane = world.plane
    org = plane.create_organization(dev(EVE), {"slug": "saved", "name": "Saved"})
    team = plane.create_team(dev(EVE), {"organization_id": org.id, "slug": "t1", "name": "T"})
    plane.create_invitation(
        dev(EVE), {"organization_id": org.id, "email": "x@example.com", "role": "admin"}
    )
    key, raw = plane.create_api_key(
        dev(DAVE), {"name": "k", "organization_id": world.acme, "scopes": ["jobs:read"]}
    )
    definition, _ = plane.upsert_definition(
        dev(CAROL),
        {"name": "w", "organization_id": world.acme, "nodes": [{"key": "a"}]},
    )
    data = json.loads(json.dumps(snapshot(plane)))  # what the file holds
    assert raw not in json.dumps(data)
    assert key.key_hash in json.dumps(data)
    assert team.id in json.dumps(data)
    return data, raw, org.id, definition.id


def test_round_trip() -> None:
    data, raw, org_id, definition_id = _populated()
    fresh = make_world().plane
    restore(fresh, data)
    caller = fresh.authenticate(f"Bearer {raw}", None, public=False)
    assert caller is not None
    assert caller.principal_id == DAVE
    assert fresh.tenancy.role_in(EVE, org_id) is Role.OWNER
    assert [o.id for o, _ in fresh.my_orgs(dev(EVE))].count(org_id) == 1
    assert fresh.get_definition(dev(CAROL), definition_id).name == "w"
    assert [t.slug for t in fresh.org_teams(dev(EVE), org_id)] == ["t1"]
    assert fresh.tenancy.role_in(ALICE, fresh.tenancy.organizations[org_id].id) is None


def _break(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(data)
    target: Any = broken
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("version",), 99, "fabric: "),
        (("organizations",), "nope", "fabric.organizations: "),
        (("organizations", 0, "slug"), 5, "fabric.organizations[0].slug: "),
        (("memberships", 0, "role"), "emperor", "fabric.memberships[0].role: "),
        (("api_keys", 0, "status"), "zombie", "fabric.api_keys[0].status: "),
        (("api_keys", 0, "scopes"), "jobs:read", "fabric.api_keys[0].scopes: "),
        (("invitations", 0, "expires_at"), "soon", "fabric.invitations[0].expires_at: "),
        (("workflow_definitions", 0, "nodes"), [], "fabric.workflow_definitions[0].nodes: "),
        (("teams", 0, "organization_id"), "missing-org", "unknown organization"),
        (("teams", 0, "extra"), 1, "fabric.teams[0].extra: unknown key"),
    ],
)
def test_bad_state_is_refused_and_changes_nothing(
    path: tuple[Any, ...], value: Any, named: str
) -> None:
    data, _raw, org_id, _ = _populated()
    fresh = make_world().plane
    before = json.dumps(snapshot(fresh), sort_keys=True)
    with pytest.raises(ValueError, match=re.escape(named)):
        restore(fresh, _break(data, path, value))
    assert json.dumps(snapshot(fresh), sort_keys=True) == before
    assert org_id not in fresh.tenancy.organizations


def test_state_file_carries_keys_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "fabric-state.json"
    settings: dict[str, Any] = {
        "state_dir": tmp_path,
        "state_file": state,
        "tls_enabled": False,
        "services": ("fabric",),
    }
    headers = {"X-Principal-Id": ALICE}
    with run_in_thread(SEED, **settings) as first:
        base = first.url("fabric")
        created = httpx.post(
            f"{base}/v1/api-keys", json={"name": "kept", "organization_id": ACME}, headers=headers
        )
        raw = created.json()["data"]["key"]
    assert raw not in state.read_text()
    document = load_state(state)
    assert document is not None
    with run_in_thread(SEED, **settings) as second:
        # What `emulator serve --state-file` does before serving (the embedded API does not).
        second.call(restore_services, state, second.emulator.services, document)
        me = httpx.get(f"{second.url('fabric')}/v1/me", headers={"Authorization": f"Bearer {raw}"})
        assert me.json()["data"]["principal_id"] == ALICE
