"""Job callbacks: which hosts may receive them, how they are signed, and their delivery state.

Owns `signature` / `verify_signature` (HMAC-SHA256 of the raw body under the seeded callback
secret, sent as `X-FoundryOps-Signature: sha256=<hex>` with `X-FoundryOps-Delivery`),
`host_allowed` (loopback only unless the seed lists more hosts; `*.example.com` covers
subdomains), `retry_delay` (exponential backoff) and the delivery state machine
(`DeliveryStatus`, `DeliveryEvent`, `TRANSITIONS`, `apply`). Imports nothing from trio, quart
or yaml.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from .errors import Conflict, InvalidRequest

DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")
SIGNATURE_HEADER = "X-FoundryOps-Signature"
DELIVERY_HEADER = "X-FoundryOps-Delivery"
EVENT_HEADER = "X-FoundryOps-Event"
MAX_ATTEMPTS = 5


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(signature(secret, body), header)


def parse_callback_url(value: object) -> str:
    """A syntactically valid http(s) URL, or INVALID_REQUEST."""
    if not isinstance(value, str) or len(value) > 2048:
        raise InvalidRequest(
            "INVALID_REQUEST",
            "callback_url must be an http or https URL.",
            {"field": "callback_url"},
        )
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise InvalidRequest(
            "INVALID_REQUEST",
            "callback_url must be an http or https URL.",
            {"field": "callback_url"},
        )
    return value


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    host = (urlsplit(url).hostname or "").casefold().rstrip(".")
    for pattern in allowed:
        pattern = pattern.casefold()
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
        if host == pattern:
            return True
    return False


def retry_delay(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, 4, 8, ... capped)."""
    return float(min(base * (2 ** max(attempt - 1, 0)), cap))


class DeliveryStatus(enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed
    BLOCKED = "blocked"  # the host is not allowed by the seed; nothing was sent


class DeliveryEvent(enum.Enum):
    SUCCEED = "succeed"
    RETRY = "retry"
    GIVE_UP = "give_up"
    BLOCK = "block"


TRANSITIONS: Mapping[tuple[DeliveryStatus, DeliveryEvent], DeliveryStatus] = {
    (DeliveryStatus.PENDING, DeliveryEvent.SUCCEED): DeliveryStatus.DELIVERED,
    (DeliveryStatus.PENDING, DeliveryEvent.RETRY): DeliveryStatus.PENDING,
    (DeliveryStatus.PENDING, DeliveryEvent.GIVE_UP): DeliveryStatus.FAILED,
    (DeliveryStatus.PENDING, DeliveryEvent.BLOCK): DeliveryStatus.BLOCKED,
}


@attrs.define(eq=False)
class Delivery:
    delivery_id: str
    job_id: str
    url: str
    created_at: float
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    finished_at: float | None = None


def apply(
    delivery: Delivery,
    event: DeliveryEvent,
    now: float,
    *,
    status_code: int | None = None,
    error: str | None = None,
) -> DeliveryStatus:
    """The only place a delivery status is assigned; SUCCEED, RETRY and GIVE_UP count attempts."""
    new_status = TRANSITIONS.get((delivery.status, event))
    if new_status is None:
        raise Conflict(
            "INVALID_DELIVERY_TRANSITION",
            f"Delivery '{delivery.delivery_id}' is {delivery.status.value}; "
            f"it cannot take '{event.value}'.",
        )
    if event is not DeliveryEvent.BLOCK:
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.last_error = error
    delivery.status = new_status
    if new_status is not DeliveryStatus.PENDING:
        delivery.finished_at = now
    return new_status
