"""Per-key token buckets and the job concurrency limits of each tier.

Owns `TokenBucket` (capacity = the tier's burst, refilled at requests_per_minute / 60 per
second on the injected clock), `RateStatus` (what goes into X-RateLimit-Limit, -Remaining and
-Reset) and `RateLimiter`, which takes one token per request or raises RATE_LIMIT with
Retry-After; `check_job_slot` refuses a new job when the key already has its tier's running
and queued jobs. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import math

import attrs

from .access import TierLimits
from .errors import RateLimited


@attrs.frozen
class RateStatus:
    limit: int  # requests per minute
    remaining: int
    reset_seconds: int  # until the bucket is full again


@attrs.define
class TokenBucket:
    capacity: float
    refill_per_second: float
    tokens: float
    updated_at: float

    def refill(self, now: float) -> None:
        elapsed = max(now - self.updated_at, 0.0)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_per_second)
        self.updated_at = max(now, self.updated_at)

    def seconds_until(self, tokens: float) -> float:
        missing = tokens - self.tokens
        return 0.0 if missing <= 0 else missing / self.refill_per_second


@attrs.define
class RateLimiter:
    buckets: dict[str, TokenBucket] = attrs.field(factory=dict)

    def _bucket(self, key_id: str, tier: TierLimits, now: float) -> TokenBucket:
        bucket = self.buckets.get(key_id)
        if bucket is None or bucket.capacity != tier.burst:
            bucket = TokenBucket(
                capacity=float(tier.burst),
                refill_per_second=tier.requests_per_minute / 60.0,
                tokens=float(tier.burst),
                updated_at=now,
            )
            self.buckets[key_id] = bucket
        bucket.refill(now)
        return bucket

    def take(
        self, key_id: str, tier: TierLimits, now: float, *, queue_depth: int = 0
    ) -> RateStatus:
        """Spend one token, or raise RATE_LIMIT (and spend nothing)."""
        bucket = self._bucket(key_id, tier, now)
        if bucket.tokens < 1.0:
            retry_after = max(math.ceil(bucket.seconds_until(1.0)), 1)
            raise RateLimited(
                f"Rate limit of {tier.requests_per_minute} requests per minute "
                f"({tier.name} tier) reached; retry in {retry_after} s.",
                retry_after=retry_after,
                limit=tier.requests_per_minute,
                concurrency_limit=tier.max_concurrent_jobs,
                queue_depth=queue_depth,
            )
        bucket.tokens -= 1.0
        return RateStatus(
            limit=tier.requests_per_minute,
            remaining=math.floor(bucket.tokens),
            reset_seconds=math.ceil(bucket.seconds_until(bucket.capacity)),
        )

    def peek(self, key_id: str, tier: TierLimits, now: float) -> RateStatus:
        bucket = self._bucket(key_id, tier, now)
        return RateStatus(
            tier.requests_per_minute,
            math.floor(bucket.tokens),
            math.ceil(bucket.seconds_until(bucket.capacity)),
        )


def check_job_slot(tier: TierLimits, queued: int, running: int) -> None:
    """Refuse a new job when the key's running and queued jobs fill its tier's limits."""
    if queued + running >= tier.max_concurrent_jobs + tier.max_queued_jobs:
        raise RateLimited(
            f"The {tier.name} tier runs {tier.max_concurrent_jobs} jobs at a time and queues "
            f"{tier.max_queued_jobs}; this key has {running} running and {queued} queued.",
            retry_after=5,
            limit=tier.requests_per_minute,
            concurrency_limit=tier.max_concurrent_jobs,
            queue_depth=queued,
        )
