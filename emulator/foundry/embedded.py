"""Foundry helpers on an embedded emulator's handle (`handle.foundry`): tokens, runtimes, jobs.

Owns what tests and programs embedding the emulator need to drive Foundry without HTTP
plumbing: mint a bearer token for a user with given scopes, create (or reset) a runtime session
and get the environment a module process needs (its token written to a private file, as
`foundry-emulator module env` does), and read the job table. Every call runs on the emulator's
Trio loop (`EmulatorHandle.call`), so the thread-served emulator can be driven from its caller's
thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ..embedded import EmulatorHandle
    from .instance import FoundryInstance


@attrs.frozen
class FoundryHandle:
    handle: EmulatorHandle

    @property
    def instance(self) -> FoundryInstance:
        from .instance import FoundryInstance

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

    def create_runtime(
        self,
        runtime_id: str,
        deployed_app_rid: str | None = None,
        branch: str | None = None,
        *,
        token_file: Path | str | None = None,
        rotate_token: bool = False,
    ) -> dict[str, str]:
        """Create or reset a runtime session (as POST .../compute-modules/runtimes does) and
        return the module's environment: RUNTIME_HOST, RUNTIME_PORT, the four URIs, the CA
        paths, and MODULE_AUTH_TOKEN, the path of a file (mode 0600, no trailing newline) with
        the runtime's token. Without `token_file` a new temporary file is made; removing it is
        the caller's (pass a path under pytest's `tmp_path` to have it cleaned up)."""
        from .api.runtime import runtime_session_to_json
        from .core.errors import DomainError
        from .core.runtimes import RuntimeRequest
        from .launcher import RuntimeSession, write_token_file

        body: dict[str, Any] = {"runtimeId": runtime_id, "rotateToken": rotate_token}
        if deployed_app_rid is not None:
            body["deployedAppRid"] = deployed_app_rid
        if branch is not None:
            body["branch"] = branch

        def create() -> dict[str, Any]:
            instance = self.instance
            try:
                ask = RuntimeRequest.from_json(body)
                runtime, existed = instance.runtimes.create_or_reset(
                    ask, instance.context.clock.now(), instance.context.randomness
                )
            except DomainError as error:
                raise ValueError(error.message) from None
            ended = instance.broker.runtime_reset(runtime) if existed else []
            return runtime_session_to_json(
                instance.state, runtime, created=not existed, ended=ended
            )

        answer: dict[str, Any] = self.handle.call(create)
        session = RuntimeSession.from_json(answer)
        path = write_token_file(
            session.module_auth_token, None if token_file is None else Path(token_file)
        )
        return session.environment(path)

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the emulator keeps, oldest first, as the inspector's job detail shows it
        (state, query, timings, result size and first bytes, failure)."""
        from .api.inspector import job_detail_to_json

        def read() -> list[dict[str, Any]]:
            return [job_detail_to_json(job) for job in self.instance.broker.jobs]

        result: list[dict[str, Any]] = self.handle.call(read)
        return result
