"""Prometheus metrics of one FoundryOps instance (`GET /metrics`), with prometheus-client.

Owns `Metrics`: its own `CollectorRegistry` (no module-level state, so two instances never
share counters), request counts and latencies per route, jobs, matches and credits, and the text
exposition. Imports prometheus_client; nothing from trio or quart.
"""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


@attrs.define(eq=False)
class Metrics:
    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    requests: Counter = attrs.field(init=False)
    latency: Histogram = attrs.field(init=False)
    jobs: Counter = attrs.field(init=False)
    matches: Counter = attrs.field(init=False)
    credits: Counter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.requests = Counter(
            "foundryops_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "foundryops_request_duration_seconds",
            "Time to answer a request, by route.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
            registry=self.registry,
        )
        self.jobs = Counter(
            "foundryops_jobs_submitted",
            "Async jobs submitted, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.matches = Counter(
            "foundryops_match_records",
            "Records matched, by profile.",
            ["profile"],
            registry=self.registry,
        )
        self.credits = Counter(
            "foundryops_credits_metered", "Credits charged or metered, by mode.", ["mode"],
            registry=self.registry,
        )  # fmt: skip

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
