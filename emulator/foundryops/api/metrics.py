"""Prometheus metrics of one FoundryOps instance (`GET /metrics`), with prometheus-client.

Owns `Metrics`: its own `CollectorRegistry` (no module-level state, so two instances never
share counters), request counts and latencies per route, jobs, matches and credits, and the text
exposition. A labelled child is looked up once and kept (`labels()` costs a few microseconds a
call, on every request). Imports prometheus_client; nothing from trio or quart.
"""

from __future__ import annotations

from typing import Any

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
    # (id of the metric, labels) -> the labelled child, so the hot path skips `labels()`.
    _children: dict[tuple[int, tuple[str, ...]], Any] = attrs.field(init=False, factory=dict)

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

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self._child(self.requests, method, route, str(status)).inc()
        self._child(self.latency, method, route).observe(seconds)

    def count_job(self, kind: str) -> None:
        self._child(self.jobs, kind).inc()

    def count_match(self, profile: str) -> None:
        self._child(self.matches, profile).inc()

    def meter_credits(self, mode: str, cost: float) -> None:
        self._child(self.credits, mode).inc(cost)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
