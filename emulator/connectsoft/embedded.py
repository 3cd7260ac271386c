"""ConnectSoft helpers on an embedded emulator's handle (`handle.service("connectsoft")`).

Owns what tests and programs embedding the emulator need to drive the runtime platform without
HTTP plumbing: a bearer token for a seeded client, the faults of the control routes (fail the
next provisioning or health gate, make a service unhealthy, inject or clear drift), deciding
approvals, and waiting for an event or a status instead of sleeping. Every call runs on the
emulator's trio loop (`EmulatorHandle.call`), so a thread-served emulator can be driven from its
caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .core.events import Event

if TYPE_CHECKING:
    from ..embedded import EmulatorHandle
    from .instance import ConnectSoftInstance


@attrs.frozen
class ConnectSoftHandle:
    handle: EmulatorHandle

    @property
    def instance(self) -> ConnectSoftInstance:
        from .instance import ConnectSoftInstance

        instance = self.handle.emulator.services["connectsoft"]
        assert isinstance(instance, ConnectSoftInstance)
        return instance

    def token(
        self,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        tenant: str | None = None,
    ) -> str:
        """An access token, as `POST /connect/token` would issue it."""

        def issue() -> str:
            instance = self.instance
            issued = instance.issuer.issue(
                client_id=client_id,
                client_secret=client_secret,
                grant_type="client_credentials",
                scope=scope,
                tenant=tenant,
                now=instance.engine.now(),
            )
            return issued.access_token

        return str(self.handle.call(issue))

    def fail_next_provisioning(self, count: int = 1) -> None:
        self._call(lambda engine, now: engine.state.arm_provisioning_failure(count))

    def fail_next_health_gate(self, count: int = 1) -> None:
        self._call(lambda engine, now: engine.state.arm_health_gate_failure(count))

    def set_unhealthy(
        self, environment_id: str, service_id: str, check: str | None = None, unhealthy: bool = True
    ) -> None:
        self._call(
            lambda engine, now: engine.state.set_unhealthy(
                environment_id, service_id, check, unhealthy, now
            )
        )

    def inject_drift(
        self,
        environment_id: str,
        service_id: str,
        kind: str,
        actual: str,
        severity: str | None = None,
    ) -> None:
        self._call(
            lambda engine, now: engine.state.inject_drift(
                environment_id, service_id, kind, actual, severity, now
            )
        )

    def apply_drift_rule(self, rule_id: str) -> None:
        self._call(lambda engine, now: engine.state.apply_drift_rule(rule_id, now))

    def grant_approval(self, approval_id: str) -> None:
        self._call(lambda engine, now: engine.state.grant_approval(approval_id, now))

    def reject_approval(self, approval_id: str) -> None:
        self._call(lambda engine, now: engine.state.reject_approval(approval_id, now))

    def wait_event(self, matches: Callable[[Event], bool], *, timeout: float = 30.0) -> Event:
        """The first event (already logged or still to come) that `matches`; waits without
        polling. TimeoutError after `timeout` seconds."""

        async def wait() -> Event:
            engine = self.instance.engine
            seen = 0
            with trio.fail_after(timeout):
                while True:
                    resume = await engine.wait_events(seen)
                    for event in resume.events:
                        if matches(event):
                            return event
                        seen = event.sequence
                    if engine.closed:
                        raise TimeoutError("the emulator stopped or was reset")

        token = self.handle.trio_token
        if token is None:
            raise RuntimeError("wait_event needs an emulator served in another thread")
        try:
            return trio.from_thread.run(wait, trio_token=token)
        except trio.TooSlowError:
            raise TimeoutError(f"no matching event within {timeout} s") from None

    def _call(self, operation: Callable[[Any, float], object]) -> None:
        def run() -> None:
            engine = self.instance.engine
            engine.call(lambda now: operation(engine, now))

        self.handle.call(run)
