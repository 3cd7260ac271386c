"""Who may do what: the scope and tenant decision every REST route and gRPC method makes first.

Owns `Caller` (the verified claims of a bearer token), `Decision` and `decide`, a pure function
of the caller, the required `runtime.{resource}.{action}` scope and the tenant the target is
bound to. 401 means "who are you?" (no or invalid token), 403 means "not you" (which scope is
missing, or that the token's tenant is not the one the environment is bound to). The other
tenant's name is never told. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import attrs

from .errors import Forbidden, Unauthenticated


@attrs.frozen
class Caller:
    subject: str
    tenant_id: str
    scopes: frozenset[str]


@attrs.frozen
class Decision:
    allowed: bool
    # 200 when allowed, else 401 or 403.
    status: int
    code: str
    message: str
    scope: str
    tenant_id: str | None

    def raise_if_refused(self) -> None:
        if self.allowed:
            return
        details = {"requiredScope": self.scope}
        if self.status == 401:
            raise Unauthenticated(self.code, self.message, details)
        raise Forbidden(self.code, self.message, details)


def decide(
    caller: Caller | None,
    scope: str,
    bound_tenant: str | None,
    *,
    unauthenticated_reason: str = "A bearer token is required.",
) -> Decision:
    """The decision for one call.

    `caller` is None when the token is missing or did not verify (the reason is passed in);
    `bound_tenant` is the tenant the target environment is bound to, or the tenant a request
    body names, or None when the route has no tenant (reading one's own token).
    """
    if caller is None:
        return Decision(False, 401, "Unauthenticated", unauthenticated_reason, scope, None)
    if scope not in caller.scopes:
        return Decision(
            False,
            403,
            "InsufficientScope",
            f"The token lacks the scope {scope}.",
            scope,
            caller.tenant_id,
        )
    if bound_tenant is not None and bound_tenant != caller.tenant_id:
        return Decision(
            False,
            403,
            "TenantMismatch",
            f"Tenant {caller.tenant_id} is not bound to this resource.",
            scope,
            caller.tenant_id,
        )
    return Decision(True, 200, "Allowed", "Allowed.", scope, caller.tenant_id)
