"""Shared builders for the Fabric tests: deterministic ids, clocks and a populated plane."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import attrs

from emulator.fabric.core.auth import AuthMethod, Caller
from emulator.fabric.core.config import PlaneConfig
from emulator.fabric.core.plane import ControlPlane
from emulator.fabric.core.providers import ECHO, Catalog
from emulator.fabric.core.tenancy import Role
from emulator.platform.clock import ManualClock

ALICE = "11111111-1111-4111-8111-111111111111"  # owner of acme
BOB = "22222222-2222-4222-8222-222222222222"  # viewer of acme
CAROL = "33333333-3333-4333-8333-333333333333"  # member of acme
DAVE = "44444444-4444-4444-8444-444444444444"  # admin of acme
EVE = "55555555-5555-4555-8555-555555555555"  # in no org but default


class Ids:
    """UUID-shaped ids from a counter, so tests can predict them."""

    def __init__(self, first: int = 1) -> None:
        self._counter = itertools.count(first)

    def __call__(self) -> str:
        return str(uuid.UUID(int=next(self._counter)))


class Texts:
    """Stand-in for random text: distinct per call, predictable."""

    def __init__(self, first: int = 1) -> None:
        self._counter = itertools.count(first)

    def __call__(self, length: int, alphabet: str) -> str:
        return (f"{next(self._counter):08d}" + alphabet * length)[:length]


def dev(principal: str) -> Caller:
    return Caller(principal, AuthMethod.DEV_HEADER)


@attrs.define
class World:
    plane: ControlPlane
    clock: ManualClock
    acme: str


def make_world(
    catalog: Catalog | None = None,
    config: PlaneConfig | None = None,
    clock: Any = None,
    first_id: int = 1,
) -> World:
    """A plane with the Acme org; `first_id` starts its id counter (a world standing for a
    restarted emulator draws ids unlike the first one's, as uuid4 does)."""
    clock = clock or ManualClock()
    plane = ControlPlane(
        clock=clock,
        new_id=Ids(first_id),
        random_text=Texts(),
        random=lambda: 0.5,
        catalog=catalog or Catalog((ECHO,)),
        config=config or PlaneConfig(jwt_secret="s" * 32),
    )
    org = plane.create_organization(dev(ALICE), {"slug": "acme", "name": "Acme"})
    now = clock.now()
    plane.tenancy.grant(BOB, org.id, Role.VIEWER, now)
    plane.tenancy.grant(CAROL, org.id, Role.MEMBER, now)
    plane.tenancy.grant(DAVE, org.id, Role.ADMIN, now)
    return World(plane, clock, org.id)
