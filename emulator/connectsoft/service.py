"""ConnectSoft as the platform sees it before it runs: `ConnectSoftService` (its name and
ports, seed reading, the `check` summary and warnings, the `init` block).

`start` imports `emulator.connectsoft.instance` (the engine, the OIDC issuer, gRPC, Quart) only
then, so a run or a `check` that does not serve ConnectSoft does not pay for loading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..platform.seedschema import Node
from ..platform.service import Service, ServiceContext
from .seed import ConnectSoftSeed

if TYPE_CHECKING:
    from .instance import ConnectSoftInstance

STARTER_BLOCK = """\
connectsoft:
  # OIDC clients for POST /connect/token (client credentials). scopes default to all of
  # runtime.{environments,deployments,...}.{read,write}; the first tenant is the default.
  clients:
    - client_id: portal
      client_secret: portal-secret
      tenants: [connectsoft]
  # Tenant bindings (RuntimeTenantBinding); projects: [] allows any project.
  tenants:
    - tenant_id: connectsoft
  # Seconds each state lasts (0 moves on at once).
  durations:
    environment_provisioning: 2
    deployment_rolling_out: 2
  # Governance for stage: prod (decision: allow | deny (with reason) | require_approval).
  governance:
    - operation: deployments.write
      decision: require_approval
  environments:
    - environment_id: env-9f1c2b7d
      tenant_id: connectsoft
      project_id: proj-booking-saas
      name: booking-prod-weu
      stage: prod
      services:
        - service_id: module-reservations-api
          image: acr.azurecr.io/reservations-api:1.4.2
          replicas: 2
          checks:
            - {name: self}
            - {name: sql, duration_ms: 12}
  drift_rules:
    - rule_id: image-lag
      environment_id: env-9f1c2b7d
      service_id: module-reservations-api
      kind: ImageVersionMismatch
      actual: "1.4.1"
"""


class ConnectSoftService(Service):
    name = "connectsoft"
    title = "ConnectSoft Runtime & Cloud Platform"
    default_http_port = 4100
    default_https_port = 4543

    def read_seed(self, block: Node | None, extra: Mapping[str, Node]) -> ConnectSoftSeed:
        return ConnectSoftSeed.from_node(block)

    def start(self, seed: Any, context: ServiceContext) -> ConnectSoftInstance:
        from .instance import ConnectSoftInstance

        if not isinstance(seed, ConnectSoftSeed):
            seed = ConnectSoftSeed()
        return ConnectSoftInstance(seed, context)

    def summary(self, seed: Any) -> list[str]:
        assert isinstance(seed, ConnectSoftSeed)
        return [
            f"oidc clients: {len(seed.clients)}",
            f"tenant bindings: {len(seed.tenants)}",
            f"environments: {len(seed.environments)} "
            f"({sum(len(e.services) for e in seed.environments)} services)",
            f"governance rules: {len(seed.governance)}",
            f"drift rules: {len(seed.drift_rules)}",
        ]

    def warnings(self, seed: Any) -> list[str]:
        assert isinstance(seed, ConnectSoftSeed)
        warnings = []
        if not seed.clients:
            warnings.append("connectsoft: no clients, so no token can be issued")
        return warnings

    def starter_block(self) -> str:
        return STARTER_BLOCK
