"""The settings the seed gives the control plane (`PlaneConfig`: production mode, the JWT
secret, retention and size bounds) and the engine (`EngineConfig`: queue and concurrency
bounds, retries, time-outs, the event subscribers' buffer). A module of its own so that
reading a seed loads no more than these records (the plane, its auth chain and their
libraries load when the service starts).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class PlaneConfig:
    production: bool = False
    jwt_secret: str | None = attrs.field(default=None, repr=False)
    event_retention: int = 10_000
    audit_retention: int = 10_000
    usage_retention: int = 100_000
    max_asset_bytes: int = 64 * 1024 * 1024
    max_total_asset_bytes: int = 512 * 1024 * 1024
    # Runs kept (jobs count through their backing runs); past it the oldest finished runs and
    # their jobs and idempotency keys are forgotten (GET then answers 404).
    run_retention: int = 100_000


@attrs.frozen
class EngineConfig:
    # Runs waiting to be picked up; past this, submissions answer 429.
    queue_limit: int = 10_000
    # Runs executing at once, and nodes executing at once across all runs.
    max_active_runs: int = 512
    max_concurrent_nodes: int = 256
    # Independent nodes of one run executing at once (1 gives the reference's strict order).
    per_run_concurrency: int = 4
    default_retries: int = 0
    retry_backoff: float = 0.1  # seconds before the first retry; doubles each time
    node_timeout: float = 300.0  # seconds per attempt
    subscriber_buffer: int = 4096
    # The least time between two wake-ups of the all-events streams (fanout.EventHub).
    flush_interval: float = 0.02
