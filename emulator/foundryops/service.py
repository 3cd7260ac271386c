"""FoundryOps as the platform sees it before it runs: `FoundryOpsService` (seed reading, the
`check` summary, the `init` block).

`start` imports `emulator.foundryops.instance` (the state, the engine, the matcher, pyarrow)
only then, so a run or a `check` that does not serve FoundryOps does not pay for loading it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..platform.seedschema import Node
from ..platform.service import Service, ServiceContext
from .seed import FoundryOpsSeed

if TYPE_CHECKING:
    from .instance import FoundryOpsInstance

STARTER_BLOCK = """\
# FoundryOps entity resolution (docs/foundryops/). Keys are sent as `Authorization: Bearer`.
foundryops:
  mode: shadow                 # shadow (metered, never refused) or enforced (402 when empty)
  api_keys:
    - key: fo_test_key_0001    # change me
      id: dev
      scopes: [datasets, jobs, webhooks]
      tier: enterprise         # free, starter, growth, enterprise (or your own under tiers:)
  callbacks:
    secret: whsec_change_me
    allowed_hosts: [127.0.0.1, localhost, "::1"]
  datasets:
    - id: ds_demo
      name: Demo accounts
      snapshot_id: dss_snapshot1
      schema: {company_name: string, domain: string}
      records:
        - {company_name: Acme Inc, domain: acme.com}
        - {company_name: Globex Corp, domain: globex.com}
"""


class FoundryOpsService(Service):
    name = "foundryops"
    title = "FoundryOps entity resolution"
    default_http_port = 4200
    default_https_port = 4643

    def read_seed(self, block: Node | None, extra: Mapping[str, Node]) -> FoundryOpsSeed:
        return FoundryOpsSeed.from_node(block)

    def start(self, seed: Any, context: ServiceContext) -> FoundryOpsInstance:
        from .instance import FoundryOpsInstance

        if not isinstance(seed, FoundryOpsSeed):
            seed = FoundryOpsSeed.from_node(None)
        return FoundryOpsInstance(seed, context)

    def summary(self, seed: Any) -> list[str]:
        assert isinstance(seed, FoundryOpsSeed)
        generated = sum(d.generate for d in seed.datasets)
        return [
            f"api keys: {len(seed.api_keys)}",
            f"credit mode: {seed.mode.value}",
            f"datasets: {len(seed.datasets)} ({generated} generated records)",
            f"callback hosts: {', '.join(seed.allowed_hosts)}",
        ]

    def warnings(self, seed: Any) -> list[str]:
        assert isinstance(seed, FoundryOpsSeed)
        out = []
        if not seed.api_keys:
            out.append("foundryops: no api_keys, so every API route answers 401")
        return out

    def starter_block(self) -> str:
        return STARTER_BLOCK
