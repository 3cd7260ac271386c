"""Foundry helpers on an embedded emulator's handle (`handle.foundry`): tokens, runtimes, jobs.

Owns what tests and programs embedding the emulator need to drive Foundry without HTTP
plumbing: mint a bearer token for a user with given scopes, and (with the compute-module
plane) create a runtime session with its module environment and read the job table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ..embedded import EmulatorHandle
    from .service import FoundryInstance


@attrs.frozen
class FoundryHandle:
    handle: EmulatorHandle

    @property
    def instance(self) -> FoundryInstance:
        from .service import FoundryInstance

        instance = self.handle.emulator.services["foundry"]
        assert isinstance(instance, FoundryInstance)
        return instance

    def mint_token(self, username: str, scopes: Iterable[str] = (), *, ttl: int = 3600) -> str:
        """A bearer token for a seeded (or service) principal with exactly these scopes."""
        scope_list = tuple(scopes)

        def mint() -> str:
            instance = self.instance
            principal = instance.identity.directory.get(username)
            if principal is None or not principal.active:
                raise ValueError(f"no active principal named {username!r}")
            token, _ = instance.identity.tokens.issue(
                instance.context.randomness,
                username=username,
                scopes=scope_list,
                client_id=None,
                ttl=ttl,
                now=instance.context.clock.now(),
                origin="embedded",
            )
            return token

        result: str = self.handle.call(mint)
        return result

    def state(self) -> dict[str, Any]:
        """The secret-free description `/_emulate/state` shows for Foundry."""
        result: dict[str, Any] = self.handle.call(self.instance.describe)
        return result
