"""Providers: the Echo stub, seeded scripted providers, routing, token counting and pricing.

Owns `ProviderSpec` (modalities, models, tier, per-token `Price`, `Latency`, tokens per second,
failure rate, health), the always-present `ECHO`, `Catalog` with the routing rules (tier filter,
capability required, skip unhealthy, cheapest first, `model` forces its provider), and
`plan_call`: everything a call will do (output, chunks, tokens, cost, delay, failure) decided up
front from the request and an injected random source. Waiting out the delay is the engine's job.
Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .errors import ProviderFailed, ValidationFailed

MODALITIES = ("text", "image", "audio", "embedding")
STREAMABLE = frozenset({"text"})
TIERS = ("basic", "premium")
MAX_DELAY_MS = 60_000
FORCED_FAILURE = "echo: forced failure"


@attrs.frozen
class Price:
    """USD per token."""

    input_per_token: float = 0.0
    output_per_token: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.input_per_token + output_tokens * self.output_per_token


@attrs.frozen
class Latency:
    """Seconds before a call answers: uniform between min and max (equal for a fixed latency)."""

    min_ms: float = 0.0
    max_ms: float = 0.0

    def sample(self, random: Callable[[], float]) -> float:
        if self.max_ms <= self.min_ms:
            return self.min_ms / 1000.0
        return (self.min_ms + (self.max_ms - self.min_ms) * random()) / 1000.0


@attrs.frozen
class ProviderSpec:
    provider_id: str
    modalities: tuple[str, ...]
    models: tuple[str, ...]
    tier: str = "basic"
    price: Price = Price()
    latency: Latency = Latency()
    # Streaming pace; None streams every chunk at once.
    tokens_per_second: float | None = None
    failure_rate: float = 0.0
    healthy: bool = True

    @property
    def default_model(self) -> str:
        return self.models[0]

    def serves(self, modality: str) -> bool:
        return modality in self.modalities


ECHO = ProviderSpec("echo", MODALITIES, ("echo",), tier="basic")


def prompt_text(payload: Any) -> str:
    """T of the Echo rules: `input.prompt` when it is a string, else the input as compact JSON."""
    if isinstance(payload, dict) and isinstance(payload.get("prompt"), str):
        return str(payload["prompt"])
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


def count_tokens(text: str) -> int:
    """Whitespace-separated words, at least 1."""
    return max(1, len(text.split()))


def split_chunks(text: str) -> tuple[str, ...]:
    """Words, each chunk carrying the whitespace before it, so the chunks join back to `text`."""
    chunks = re.findall(r"\s*\S+", text)
    if not chunks:
        return (text,)
    consumed = sum(len(chunk) for chunk in chunks)
    if consumed < len(text):
        chunks[-1] += text[consumed:]
    return tuple(chunks)


def embedding_of(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [
        round(int.from_bytes(digest[i : i + 2], "big") / 65535.0 * 2 - 1, 6)
        for i in range(0, 16, 2)
    ]


def render_output(modality: str, payload: Any, text: str) -> dict[str, Any]:
    if modality == "text":
        return {"text": text}
    if modality == "embedding":
        return {"embedding": embedding_of(text)}
    return {"echo": payload}


@attrs.frozen
class Route:
    """The provider and model a request goes to."""

    provider: ProviderSpec
    model: str


@attrs.frozen
class CallPlan:
    provider_id: str
    model: str
    modality: str
    tier: str
    output: dict[str, Any]
    chunks: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    delay: float  # seconds before the answer (or the first chunk)
    chunk_interval: float  # seconds between streamed chunks
    failure: str | None  # the error message when the call fails

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "estimated_cost_usd": self.cost_usd,
        }

    def answer(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "model": self.model,
            "modality": self.modality,
            "output": self.output,
            "usage": self.usage(),
        }


@attrs.frozen
class ProviderRequest:
    """A validated execute, estimate or stream body (also a job's or node's provider call)."""

    modality: str
    input: Any
    model: str | None = None
    tier: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_fields(
        cls, modality: object, payload: object, model: object, tier: object, params: object
    ) -> ProviderRequest:
        if not isinstance(modality, str) or modality not in MODALITIES:
            raise ValidationFailed(f"modality must be one of {', '.join(MODALITIES)}")
        if payload is None:
            raise ValidationFailed("input is required")
        if model is not None and (not isinstance(model, str) or not model):
            raise ValidationFailed("model must be a non-empty string")
        if tier is not None and tier not in TIERS:
            raise ValidationFailed(f"tier must be one of {', '.join(TIERS)}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValidationFailed("params must be an object")
        delay = params.get("delay_ms")
        if delay is not None and (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not 0 <= delay <= MAX_DELAY_MS
        ):
            raise ValidationFailed(f"params.delay_ms must be a number from 0 to {MAX_DELAY_MS}")
        return cls(modality, payload, model, tier, params)


@attrs.frozen
class Catalog:
    """Every provider (Echo first) and the price table that overrides their own prices."""

    providers: tuple[ProviderSpec, ...] = (ECHO,)
    prices: Mapping[tuple[str, str], Price] = attrs.field(factory=dict)

    def price_of(self, provider: ProviderSpec, model: str) -> Price:
        return self.prices.get((provider.provider_id, model), provider.price)

    def capabilities(self) -> list[dict[str, Any]]:
        rows = []
        for provider in self.providers:
            for modality in provider.modalities:
                for model in provider.models:
                    price = self.price_of(provider, model)
                    rows.append(
                        {
                            "provider_id": provider.provider_id,
                            "modality": modality,
                            "model": model,
                            "supports_streaming": modality in STREAMABLE,
                            "tier": provider.tier,
                            "healthy": provider.healthy,
                            # One 100-token prompt answered with 100 tokens.
                            "estimated_cost_per_request": price.cost(100, 100),
                        }
                    )
        return rows

    def route(self, request: ProviderRequest) -> Route:
        if request.model is not None:
            for provider in self.providers:
                if request.model in provider.models:
                    if not provider.serves(request.modality):
                        raise ValidationFailed(
                            f"model {request.model} does not serve modality {request.modality}"
                        )
                    if not provider.healthy:
                        raise ProviderFailed(f"provider {provider.provider_id} is unhealthy")
                    return Route(provider, request.model)
            raise ValidationFailed(f"unknown model {request.model!r}")
        capable = [p for p in self.providers if p.serves(request.modality)]
        if request.tier is not None:
            capable = [p for p in capable if p.tier == request.tier]
        if not capable:
            tier = f" in tier {request.tier}" if request.tier else ""
            raise ValidationFailed(f"no provider serves modality {request.modality}{tier}")
        healthy = [p for p in capable if p.healthy]
        if not healthy:
            raise ProviderFailed(f"no healthy provider serves modality {request.modality}")
        tokens = count_tokens(prompt_text(request.input))

        def order(provider: ProviderSpec) -> tuple[float, int]:
            price = self.price_of(provider, provider.default_model)
            return (price.cost(tokens, tokens), self.providers.index(provider))

        best = min(healthy, key=order)
        return Route(best, best.default_model)

    def plan(self, request: ProviderRequest, random: Callable[[], float]) -> CallPlan:
        route = self.route(request)
        provider = route.provider
        text = prompt_text(request.input)
        output = render_output(request.modality, request.input, text)
        output_text = text if request.modality == "text" else json.dumps(output)
        input_tokens = count_tokens(text)
        output_tokens = count_tokens(output_text) if request.modality == "text" else 1
        params = request.params
        delay = provider.latency.sample(random)
        if params.get("delay_ms") is not None:
            delay += float(params["delay_ms"]) / 1000.0
        failure: str | None = None
        if params.get("fail") is True:
            failure = f"{provider.provider_id}: forced failure"
        elif provider.failure_rate > 0 and random() < provider.failure_rate:
            failure = f"{provider.provider_id}: scripted failure"
        chunks = split_chunks(text) if request.modality in STREAMABLE else ()
        pace = provider.tokens_per_second
        return CallPlan(
            provider_id=provider.provider_id,
            model=route.model,
            modality=request.modality,
            tier=provider.tier,
            output=output,
            chunks=chunks,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=self.price_of(provider, route.model).cost(input_tokens, output_tokens),
            delay=delay,
            chunk_interval=0.0 if not pace else 1.0 / pace,
            failure=failure,
        )
