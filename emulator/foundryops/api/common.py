"""The request pipeline every FoundryOps route shares, and the bundle handlers work with.

Owns `Ops` (state, engine, clock, ids, seed, metrics, the listener's base URL), `Call` (one
request: ids, the authenticated caller, the body, query parameters) and `Reply`, and `route`,
which wraps a handler in the pipeline: request id and correlation id (from `traceparent`), API
key and scope, token bucket, body limit, idempotency (`Idempotency-Key` or
`X-Idempotency-Key` on POST: same key and body replay the stored answer, another body is 409),
the rate-limit and credit headers on every answer, one structured log line, metrics, and the
translation of domain errors into the FoundryOps error body (once, here). Imports trio and the
generic raw-route tools; never quart.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import attrs

from ...platform.clock import Clock
from ...platform.errors import ApiError
from ...web.rawasgi import RawRequest, RawRoute
from ..core.audit import AuditEvent
from ..core.credits import CreditMode
from ..core.errors import FoundryOpsError, InvalidRequest, PayloadTooLarge
from ..core.idempotency import Fingerprint, StoredResponse
from ..core.ids import IdFactory
from ..core.state import Caller, OpsState
from ..engine import Engine
from ..seed import FoundryOpsSeed
from .errors import CORRELATION_ID, FOUNDRYOPS, REQUEST_ID
from .metrics import Metrics

log = logging.getLogger("emulator.foundryops")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
BODY_SECONDS = 30.0


@attrs.define(eq=False)
class Ops:
    state: OpsState
    engine: Engine
    clock: Clock
    ids: IdFactory
    seed: FoundryOpsSeed
    metrics: Metrics
    base_url: Callable[[], str]


@attrs.define
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = attrs.field(factory=dict)
    # A streamed answer (files): called with the request and the headers to send.
    stream: Callable[[RawRequest, list[tuple[bytes, bytes]]], Awaitable[None]] | None = None


@attrs.define(eq=False)
class Call:
    raw: RawRequest
    ops: Ops
    request_id: str
    correlation_id: str
    caller: Caller | None = None
    body: bytes = b""

    @property
    def params(self) -> dict[str, str]:
        return self.raw.params

    def query(self, name: str) -> str | None:
        raw = self.raw.scope.get("query_string", b"")
        values = parse_qs(bytes(raw).decode("latin-1"), keep_blank_values=True).get(name)
        return values[0] if values else None

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            raise InvalidRequest("INVALID_REQUEST", "The request body must be a JSON object.")
        try:
            data = json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest("INVALID_REQUEST", "The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise InvalidRequest("INVALID_REQUEST", "The request body must be a JSON object.")
        return data

    @property
    def key(self) -> Caller:
        assert self.caller is not None
        return self.caller

    def audit(self, action: str, target: str, outcome: str = "ok") -> None:
        self.ops.state.record(
            AuditEvent(
                at=self.ops.clock.now(),
                request_id=self.request_id,
                correlation_id=self.correlation_id,
                key_id=self.caller.key.key_id if self.caller else "",
                action=action,
                target=target,
                outcome=outcome,
            )
        )


def correlation_of(raw: RawRequest, request_id: str) -> str:
    """The W3C trace id of `traceparent`, else `X-Correlation-Id`, else the request id."""
    parent = raw.header(b"traceparent")
    if parent:
        found = _TRACEPARENT.match(parent.strip().lower())
        if found and found.group(1) != "0" * 32:
            return found.group(1)
    given = raw.header(b"x-correlation-id")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return request_id


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


Handler = Callable[[Call], Awaitable[Reply]]


def route(
    ops_of: Callable[[], Ops],
    method: str,
    pattern: str,
    handler: Handler,
    *,
    scope: str | None,
    auth: bool = True,
    idempotent: bool = False,
    body_limit: int | None = None,
    summary: str = "",
) -> RawRoute:
    """A raw route running `handler` inside the FoundryOps pipeline."""

    async def serve(raw: RawRequest) -> None:
        ops = ops_of()
        started = time.perf_counter()
        request_id = "req_" + ops.ids.new("r").partition("_")[2]
        call = Call(raw, ops, request_id, correlation_of(raw, request_id))
        headers: dict[str, str] = {REQUEST_ID: request_id, CORRELATION_ID: call.correlation_id}
        idem: tuple[str, str] | None = None
        status = 500
        try:
            try:
                if auth:
                    state = ops.state
                    call.caller = state.authorize(
                        raw.header(b"authorization"), scope, ops.clock.now()
                    )
                    rate = call.caller.rate
                    headers["X-RateLimit-Limit"] = str(rate.limit)
                    headers["X-RateLimit-Remaining"] = str(rate.remaining)
                    headers["X-RateLimit-Reset"] = str(rate.reset_seconds)
                if method in ("POST", "PATCH") and body_limit is not None:
                    try:
                        call.body = await raw.read_body(body_limit, BODY_SECONDS)
                    except ApiError as error:
                        if error.status == 413:
                            raise PayloadTooLarge(
                                "PAYLOAD_TOO_LARGE",
                                f"The request body is larger than {body_limit} bytes.",
                                {"limit_bytes": body_limit},
                            ) from None
                        raise
                if idempotent and call.caller is not None:
                    given = raw.header(b"idempotency-key") or raw.header(b"x-idempotency-key")
                    if given is not None:
                        fingerprint = Fingerprint.of(method, raw.path, call.body)
                        key_id = call.caller.key.key_id
                        stored = ops.state.idempotency.begin(
                            key_id, given, fingerprint, ops.clock.now()
                        )
                        if stored is not None:
                            status = stored.status
                            replay = dict(stored.headers)
                            replay["Idempotent-Replayed"] = "true"
                            await raw.respond(stored.status, stored.body, _encode(replay))
                            return
                        idem = (key_id, given)
                reply = await handler(call)
            except FoundryOpsError as error:
                translated = FOUNDRYOPS.translate(error)
                assert translated is not None
                reply = Reply(translated.status, None)
                reply.headers.update(translated.headers)
                reply.body = _error_body(translated, headers)
            except ApiError as error:
                reply = Reply(error.status, None, dict(error.headers))
                reply.body = _error_body(error, headers)
            status = reply.status
            if call.caller is not None:
                headers.update(_credit_headers(ops, call.caller))
            headers.update({k: v for k, v in reply.headers.items() if k not in headers})
            if reply.stream is not None:
                await reply.stream(raw, _encode(headers))
                return
            body = json.dumps(reply.body, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
            if idem is not None:
                if status == 429 or status >= 500 or status == 401:
                    ops.state.idempotency.abandon(*idem)
                else:
                    ops.state.idempotency.finish(
                        *idem, StoredResponse(status, body, tuple(headers.items()))
                    )
                idem = None
            await raw.respond(status, body, _encode(headers))
        finally:
            if idem is not None:
                ops.state.idempotency.abandon(*idem)
            elapsed = time.perf_counter() - started
            ops.metrics.observe(pattern, method, status, elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    json.dumps(
                        {
                            "event": "request",
                            "request_id": request_id,
                            "correlation_id": call.correlation_id,
                            "key_id": call.caller.key.key_id if call.caller else None,
                            "method": method,
                            "route": pattern,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 3),
                        }
                    )
                )

    return RawRoute(method, pattern, serve, summary)


def _error_body(error: ApiError, ids: dict[str, str]) -> Any:
    error.headers.update({REQUEST_ID: ids[REQUEST_ID], CORRELATION_ID: ids[CORRELATION_ID]})
    return error.body()


def _credit_headers(ops: Ops, caller: Caller) -> dict[str, str]:
    account = ops.state.ledger.balance(caller.key.key_id, caller.key.org)
    name = (
        "X-Credits-Remaining"
        if account.mode is CreditMode.ENFORCED
        else "X-Credits-Remaining-Simulated"
    )
    return {name: f"{account.balance:g}"}
