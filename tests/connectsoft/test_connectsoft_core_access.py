"""The scope-and-tenant decision: 401 vs 403, and which scope or tenant."""

from __future__ import annotations

import pytest

from emulator.connectsoft.core.access import Caller, decide
from emulator.connectsoft.core.errors import Forbidden, Unauthenticated

READER = Caller("portal", "connectsoft", frozenset({"runtime.environments.read"}))


@pytest.mark.parametrize(
    ("caller", "scope", "tenant", "status", "code"),
    [
        (None, "runtime.environments.read", "connectsoft", 401, "Unauthenticated"),
        (READER, "runtime.environments.read", "connectsoft", 200, "Allowed"),
        (READER, "runtime.environments.read", None, 200, "Allowed"),
        (READER, "runtime.environments.write", "connectsoft", 403, "InsufficientScope"),
        (READER, "runtime.environments.read", "other", 403, "TenantMismatch"),
        # Scope is judged before tenant.
        (READER, "runtime.drift.read", "other", 403, "InsufficientScope"),
    ],
)
def test_decide(
    caller: Caller | None, scope: str, tenant: str | None, status: int, code: str
) -> None:
    decision = decide(caller, scope, tenant)
    assert (decision.status, decision.code, decision.allowed) == (status, code, status == 200)
    assert decision.scope == scope


def test_messages_name_the_scope_and_never_the_other_tenant() -> None:
    scope = decide(READER, "runtime.drift.read", None)
    assert "runtime.drift.read" in scope.message
    tenant = decide(READER, "runtime.environments.read", "secret-tenant-name")
    assert "connectsoft" in tenant.message
    assert "secret-tenant-name" not in tenant.message


def test_raise_if_refused() -> None:
    with pytest.raises(Unauthenticated):
        decide(
            None, "runtime.health.read", None, unauthenticated_reason="expired"
        ).raise_if_refused()
    with pytest.raises(Forbidden) as caught:
        decide(READER, "runtime.health.read", None).raise_if_refused()
    assert caught.value.details == {"requiredScope": "runtime.health.read"}
    decide(READER, "runtime.environments.read", "connectsoft").raise_if_refused()
