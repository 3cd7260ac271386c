"""API keys, the auth chain and scopes (sync, table-driven)."""

from __future__ import annotations

import time

import attrs
import jwt
import pytest
from fabric_support import ALICE, CAROL, DAVE, EVE, dev, make_world

from emulator.fabric.core.apikeys import KEY_TRANSITIONS, KeyEvent, KeyStatus, apply_key, hash_key
from emulator.fabric.core.auth import AuthMethod, Caller, require_scope
from emulator.fabric.core.config import PlaneConfig
from emulator.fabric.core.errors import (
    FabricError,
    Forbidden,
    IllegalTransition,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from emulator.fabric.core.tenancy import DEFAULT_ORG_ID, Role

SECRET = "s" * 32


def _key_body(org: str, scopes: list[str] | None = None) -> dict[str, object]:
    return {"name": "ci", "organization_id": org, "scopes": scopes or []}


def test_raw_key_is_returned_once_and_only_its_hash_is_kept() -> None:
    world = make_world()
    key, raw = world.plane.create_api_key(dev(DAVE), _key_body(world.acme))
    assert raw.startswith("fab_")
    assert len(raw) == 36
    assert key.prefix == raw[:12]
    assert key.key_hash == hash_key(raw)
    assert raw not in repr(attrs.asdict(key))
    entry = world.plane.audit.entries[-1]
    assert entry.action == "api_key.create"
    assert raw not in repr(entry)


@pytest.mark.parametrize(
    ("creator", "scopes", "expected"),
    [
        (DAVE, [], None),
        (ALICE, ["jobs:read"], None),
        (CAROL, [], Forbidden),
        (EVE, [], NotFound),
        (DAVE, ["jobs:everything"], ValidationFailed),
    ],
)
def test_key_creation_rules(
    creator: str, scopes: list[str], expected: type[FabricError] | None
) -> None:
    world = make_world()
    if expected is None:
        key, _ = world.plane.create_api_key(dev(creator), _key_body(world.acme, scopes))
        assert key.scopes == tuple(scopes)
    else:
        with pytest.raises(expected):
            world.plane.create_api_key(dev(creator), _key_body(world.acme, scopes))
        assert not world.plane.keys.by_id


@pytest.mark.parametrize("state", ["unknown", "wrong", "disabled", "revoked", "expired", "good"])
def test_key_authentication(state: str) -> None:
    world = make_world()
    body = _key_body(world.acme)
    body["expires_at"] = "2027-06-01T00:00:00Z"  # after the ManualClock start (2027-01-15)
    key, raw = world.plane.create_api_key(dev(DAVE), body)
    presented = raw
    if state == "unknown":
        presented = "fab_ZZZZZZZZ" + raw[12:]
    elif state == "wrong":
        presented = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    elif state == "disabled":
        world.plane.disable_api_key(dev(DAVE), key.id)
    elif state == "revoked":
        world.plane.revoke_api_key(dev(DAVE), key.id)
    elif state == "expired":
        world.clock.current = 1_900_000_000.0
    header = f"Bearer {presented}"
    if state == "good":
        caller = world.plane.authenticate(header, None, public=False)
        assert caller is not None
        assert caller.api_key is key
        assert caller.principal_id == DAVE
    else:
        with pytest.raises(Unauthorized):
            # An X-Principal-Id beside a bad key never rescues it: first match wins.
            world.plane.authenticate(header, EVE, public=False)


def _jwt(sub: str, exp: float | None, secret: str = SECRET) -> str:
    claims: dict[str, object] = {"sub": sub}
    if exp is not None:
        claims["exp"] = int(exp)
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("authorization", "principal", "production", "public", "expected"),
    [
        ("jwt-good", None, False, False, (ALICE, AuthMethod.JWT)),
        ("jwt-good", EVE, False, False, (ALICE, AuthMethod.JWT)),
        ("jwt-expired", None, False, False, Unauthorized),
        ("jwt-badsig", None, False, False, Unauthorized),
        ("jwt-alg-none", None, False, False, Unauthorized),
        ("jwt-hs512", None, False, False, Unauthorized),
        ("jwt-no-sub", None, False, False, Unauthorized),
        ("jwt-not-yet", None, False, False, Unauthorized),
        ("jwt-was-valid", None, False, False, (ALICE, AuthMethod.JWT)),
        ("Bearer nonsense", None, False, False, Unauthorized),
        ("Basic abc", None, False, False, Unauthorized),
        (None, EVE, False, False, (EVE, AuthMethod.DEV_HEADER)),
        (None, EVE.upper(), False, False, (EVE, AuthMethod.DEV_HEADER)),
        (None, "not-a-uuid", False, False, Unauthorized),
        (None, EVE, True, False, Unauthorized),
        (None, EVE, True, True, None),
        (None, None, False, True, None),
        (None, None, False, False, Unauthorized),
        ("jwt-good", None, True, False, (ALICE, AuthMethod.JWT)),
    ],
)
def test_auth_chain(
    authorization: str | None,
    principal: str | None,
    production: bool,
    public: bool,
    expected: tuple[str, AuthMethod] | type[Exception] | None,
) -> None:
    world = make_world(config=PlaneConfig(production=production, jwt_secret=SECRET))
    now = world.clock.now()
    tokens = {
        "jwt-good": "Bearer " + _jwt(ALICE, now + 60),
        "jwt-expired": "Bearer " + _jwt(ALICE, now - 1),
        "jwt-badsig": "Bearer " + _jwt(ALICE, now + 60, secret="x" * 32),
        "jwt-alg-none": "Bearer " + jwt.encode({"sub": ALICE}, None, algorithm="none"),
        "jwt-hs512": "Bearer " + jwt.encode({"sub": ALICE}, SECRET * 2, algorithm="HS512"),
        "jwt-no-sub": "Bearer " + jwt.encode({"exp": int(now + 60)}, SECRET, algorithm="HS256"),
        "jwt-not-yet": "Bearer "
        + jwt.encode({"sub": ALICE, "nbf": int(now + 60)}, SECRET, algorithm="HS256"),
        "jwt-was-valid": "Bearer "
        + jwt.encode({"sub": ALICE, "nbf": int(now - 60)}, SECRET, algorithm="HS256"),
    }
    header = tokens.get(authorization or "", authorization)
    if isinstance(expected, type):
        with pytest.raises(expected):
            world.plane.authenticate(header, principal, public=public)
    else:
        caller = world.plane.authenticate(header, principal, public=public)
        got = None if caller is None else (caller.principal_id, caller.method)
        assert got == expected


def test_dev_principals_own_the_default_org_on_first_sight() -> None:
    world = make_world()
    assert world.plane.tenancy.role_in(EVE, DEFAULT_ORG_ID) is None
    world.plane.authenticate(None, EVE, public=False)
    assert world.plane.tenancy.role_in(EVE, DEFAULT_ORG_ID) is Role.OWNER


def test_jwt_uses_the_injected_clock_not_the_wall_clock() -> None:
    world = make_world()
    world.clock.current = time.time() + 10_000
    token = _jwt(ALICE, time.time() + 60)  # valid by the wall clock, expired by ours
    with pytest.raises(Unauthorized):
        world.plane.authenticate("Bearer " + token, None, public=False)


@pytest.mark.parametrize(
    ("scopes", "route_scope", "allowed"),
    [
        ((), "jobs:write", True),
        ((), None, True),
        (("jobs:read",), "jobs:read", True),
        (("jobs:read",), "jobs:write", False),
        (("jobs:read",), None, False),
        (("providers:execute", "workflows:read"), "workflows:read", True),
    ],
)
def test_scopes(scopes: tuple[str, ...], route_scope: str | None, allowed: bool) -> None:
    world = make_world()
    key, _ = world.plane.create_api_key(dev(DAVE), _key_body(world.acme, list(scopes)))
    caller = Caller(DAVE, AuthMethod.API_KEY, key)
    if allowed:
        require_scope(caller, route_scope)
    else:
        with pytest.raises(Forbidden, match="Insufficient permissions"):
            require_scope(caller, route_scope)
    require_scope(dev(DAVE), route_scope)  # non-key callers are never scope-limited


@pytest.mark.parametrize("status", list(KeyStatus))
@pytest.mark.parametrize("event", list(KeyEvent))
def test_key_machine_is_its_table(status: KeyStatus, event: KeyEvent) -> None:
    world = make_world()
    key, _ = world.plane.create_api_key(dev(DAVE), _key_body(world.acme))
    key.status = status  # arranging the state under test
    target = KEY_TRANSITIONS.table.get((status, event))
    if target is None:
        with pytest.raises(IllegalTransition):
            apply_key(key, event)
        assert key.status is status
    else:
        apply_key(key, event)
        assert key.status is target


def test_key_callers_see_only_their_org() -> None:
    world = make_world()
    _key, raw = world.plane.create_api_key(dev(DAVE), _key_body(world.acme))
    world.plane.tenancy.grant(DAVE, DEFAULT_ORG_ID, Role.OWNER, world.clock.now())
    caller = world.plane.authenticate(f"Bearer {raw}", None, public=False)
    assert caller is not None
    with pytest.raises(NotFound):
        world.plane.get_organization(caller, DEFAULT_ORG_ID)
    assert [org.id for org, _ in world.plane.my_orgs(caller)] == [world.acme]
