"""What Foundry's routes work on: one holder of every area's state, rebuilt in place on reset.

Owns `FoundryState`: the seed, the service context, the state of each area (identity and
tokens, the OAuth server, connectivity, ontologies, compute-module runtimes and the job broker)
and the bearer-token check built on them. Blueprints and raw routes are built once from this
object and read its fields per request, so a reset (`rebuild`) or a restore that replaces an
area is seen by every route without rebuilding the app. Imports the core and the broker; never
quart, and nothing from the service module (no import circle with api/).
"""

from __future__ import annotations

import attrs

from ..platform.service import ServiceContext
from .api.auth import BearerAuth
from .broker import Broker
from .core.connectivity import Connectivity
from .core.identity import Identity
from .core.oauth import OAuthServer
from .core.ontologies import Ontologies
from .core.runtimes import RuntimeRegistry
from .seed import FoundrySeed


@attrs.define
class FoundryState:
    seed: FoundrySeed
    context: ServiceContext
    identity: Identity
    oauth: OAuthServer
    connectivity: Connectivity
    ontologies: Ontologies
    runtimes: RuntimeRegistry
    broker: Broker
    # Reads `identity` on every request, so it follows a rebuild.
    auth: BearerAuth = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.auth = BearerAuth(lambda: self.identity, self.context.clock)

    @classmethod
    def from_seed(
        cls,
        seed: FoundrySeed,
        context: ServiceContext,
        previous_runtimes: RuntimeRegistry | None = None,
    ) -> FoundryState:
        """Every area's state from the seed (runtime tokens the emulator made up are kept from
        `previous_runtimes`, so running modules keep authenticating across a reset)."""
        now = context.clock.now()
        identity = Identity.from_seed(seed, now)
        runtimes = RuntimeRegistry.from_seed(
            seed.compute_modules, now, context.randomness, previous_runtimes
        )
        return cls(
            seed=seed,
            context=context,
            identity=identity,
            oauth=OAuthServer.from_seed(
                seed, identity.directory, identity.tokens, context.randomness
            ),
            connectivity=Connectivity.from_seed(seed.connections, now),
            ontologies=Ontologies.from_seed(seed.ontologies),
            runtimes=runtimes,
            broker=cls.new_broker(seed, context, runtimes),
        )

    @staticmethod
    def new_broker(seed: FoundrySeed, context: ServiceContext, runtimes: RuntimeRegistry) -> Broker:
        return Broker.build(
            runtimes, seed.compute_modules.limits, context.clock, context.randomness
        )

    def rebuild(self) -> None:
        """Back to the seed, in place (the caller closed the old broker first)."""
        fresh = FoundryState.from_seed(self.seed, self.context, self.runtimes)
        self.identity = fresh.identity
        self.oauth = fresh.oauth
        self.connectivity = fresh.connectivity
        self.ontologies = fresh.ontologies
        self.runtimes = fresh.runtimes
        self.broker = fresh.broker

    def replace_runtimes(self, runtimes: RuntimeRegistry) -> None:
        """Use another runtime registry (a restored one) with a broker of its own (the caller
        closed the old broker first)."""
        self.runtimes = runtimes
        self.broker = self.new_broker(self.seed, self.context, runtimes)
