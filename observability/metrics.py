"""Metrics: a MeterProvider (OTel SDK) exposed in Prometheus text at /metrics, the GenAI semconv
histograms with the conventions' bucket bounds, per-team/backend/route counters with bounded label
cardinality, and engine KV/queue gauges. Built by a factory and passed in; nothing global."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from observability.histogram_totals import HistogramTotals, TotalsReader
from observability.usage import UsageRecord

SCOPE = "hybridgw.observability"
# Bucket bounds given by the OpenTelemetry GenAI semantic conventions.
TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BOUNDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
GENAI_HISTOGRAMS = {
    "gen_ai.server.time_to_first_token": TTFT_BOUNDS,
    "gen_ai.server.time_per_output_token": TPOT_BOUNDS,
    "gen_ai.server.request.duration": DURATION_BOUNDS,
    "gen_ai.client.token.usage": TOKEN_BOUNDS,
}
OTHER = "other"


def genai_views() -> list[View]:
    """Pin the conventions' buckets on these instruments whoever creates them (the gateway too)."""
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(boundaries=bounds))
        for name, bounds in GENAI_HISTOGRAMS.items()
    ]


@dataclass(frozen=True)
class Metrics:
    provider: MeterProvider  # pass to create_app(meter_provider=...)
    registry: CollectorRegistry  # this provider's own registry (never prometheus_client's global one)

    def exposition(self) -> bytes:
        """The Prometheus text for GET /metrics."""
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST

    def shutdown(self) -> None:
        self.provider.shutdown()


class TotalsMeterProvider(MeterProvider):
    """The SDK's provider, with the reader that also exposes our own histograms (RequestMetrics finds it here)."""

    def __init__(self, reader: TotalsReader, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(metric_readers=[reader], **kwargs)
        self.totals_reader = reader


def build_metrics(service_name: str = "hybridgw") -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    resource = Resource.create({"service.name": service_name})
    reader = TotalsReader(registry=registry, disable_target_info=True, resource=resource)
    provider = TotalsMeterProvider(
        reader, views=genai_views(), resource=resource,
        exemplar_filter=AlwaysOffExemplarFilter(),  # Prometheus text carries no exemplars; skip their cost
    )
    return Metrics(provider, registry)


class LabelCap:
    """Keeps the first `limit` distinct values of a label and folds the rest into "other"."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


class CounterTotals:
    """A counter's running totals by attribute set, added to per request (a dict update) and read by the
    SDK only when metrics are collected (an ObservableCounter's callback): the same series as a Counter's,
    without an SDK measurement (~8 µs: attribute cleaning, hashing, a lock) per add."""

    def __init__(self) -> None:
        self._totals: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()  # added to on the ledger's thread, read on the scraping one

    def add(self, amount: float, attributes: tuple[tuple[str, str], ...]) -> None:
        with self._lock:
            self._totals[attributes] = self._totals.get(attributes, 0) + amount

    def observe(self, options: CallbackOptions) -> list[Observation]:
        with self._lock:
            totals = list(self._totals.items())
        return [Observation(value, dict(attributes)) for attributes, value in totals]


def time_per_output_token(record: UsageRecord) -> float | None:
    """gen_ai.server.time_per_output_token as the GenAI conventions define it, one value per request:
    (request duration − time to first token) / (output tokens − 1). Only for a successful response whose
    tokens the gateway saw arrive apart (a stream with ≥ 2 content chunks): a non-streamed body comes
    at once, so its duration after the "first token" says nothing about decoding."""
    if record.status != "ok" or record.ttft_s is None or not record.itl_gaps_s or record.completion_tokens < 2:
        return None
    return max(0.0, record.e2e_s - record.ttft_s) / (record.completion_tokens - 1)


class _SdkHistogram:
    """An SDK Histogram taking HistogramTotals' attribute tuples: for a provider built elsewhere (no TotalsReader)."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    def record(self, value: float, attributes: tuple[tuple[str, str], ...]) -> None:
        self._histogram.record(value, dict(attributes))


def _histogram_factory(provider: MeterProvider, meter: Meter) -> Callable[[str, str, str], HistogramTotals | _SdkHistogram]:
    """Our own histograms where the provider's reader shows them (build_metrics), else the SDK's."""
    reader = getattr(provider, "totals_reader", None)

    def make(name: str, unit: str, description: str) -> HistogramTotals | _SdkHistogram:
        if reader is None:
            return _SdkHistogram(meter.create_histogram(name, unit=unit, description=description))
        histogram = HistogramTotals(name, unit, description, GENAI_HISTOGRAMS[name])
        reader.add_histogram(SCOPE, histogram)
        return histogram

    return make


class RequestMetrics:
    """What the gateway records once per finished request (record) and per engine poll (engine)."""

    def __init__(self, provider: MeterProvider, *, max_teams: int = 50, max_models: int = 50) -> None:
        meter = provider.get_meter(SCOPE)
        self._team = LabelCap(max_teams)
        self._model = LabelCap(max_models)
        self._backend = LabelCap(max_models)
        self._rule = LabelCap(max_models)
        h = _histogram_factory(provider, meter)
        self.ttft = h("gen_ai.server.time_to_first_token", "s", "Time to first token")
        self.tpot = h("gen_ai.server.time_per_output_token", "s",
                      "Time per output token generated after the first token for successful responses")
        self.duration = h("gen_ai.server.request.duration", "s", "Arrival to last byte")
        self.tokens = h("gen_ai.client.token.usage", "{token}", "Input and output tokens")
        self.requests, self.token_count, self.cost = CounterTotals(), CounterTotals(), CounterTotals()
        c = meter.create_observable_counter
        c("hybridgw.requests", [self.requests.observe], unit="{request}", description="Requests")
        c("hybridgw.tokens", [self.token_count.observe], unit="{token}", description="Tokens")
        c("hybridgw.cost_usd", [self.cost.observe], description="Cost in US dollars")
        self.kv_usage = meter.create_gauge("hybridgw.engine.kv_cache.usage", unit="1",
                                           description="Fraction of the engine's KV-cache blocks in use")
        self.running = meter.create_gauge("hybridgw.engine.requests.running", unit="{request}")
        self.waiting = meter.create_gauge("hybridgw.engine.requests.waiting", unit="{request}")

    def record(self, record: UsageRecord) -> None:
        """All per-request metrics from the finished record."""
        # Few attributes on purpose: the SDK cleans and hashes them on every histogram measurement.
        # (The response model is on the span.)
        backend = self._backend(record.backend)
        genai: tuple[tuple[str, str], ...] = (
            ("gen_ai.operation.name", record.operation),
            ("gen_ai.provider.name", record.provider or record.backend or "none"),
            ("gen_ai.request.model", self._model(record.model_alias)),
            ("hybridgw.backend", backend),
        )
        ok = record.status == "ok"
        if not ok:
            genai = (*genai, ("error.type", record.error_type or record.status))
        if not record.is_shadow:  # a shadow call is the gateway's background call, no client's latency
            self.duration.record(record.e2e_s, genai)
        if ok and record.ttft_s is not None:
            self.ttft.record(record.ttft_s, genai)
        tpot = time_per_output_token(record)
        if tpot is not None:
            self.tpot.record(tpot, genai)
        if record.status != "rejected" and not record.is_shadow:  # per client request, as the duration
            self.tokens.record(record.prompt_tokens, (*genai, ("gen_ai.token.type", "input")))
            self.tokens.record(record.completion_tokens, (*genai, ("gen_ai.token.type", "output")))
        team = (("hybridgw.team", self._team(record.team)), ("hybridgw.backend", backend))
        # The route tells a shadow call's tokens (route "shadow": spend, not traffic) from the served ones.
        route = ("hybridgw.route", self._rule(record.rule))
        self.requests.add(1, (*team, route, ("hybridgw.status", record.status)))
        self.token_count.add(record.prompt_tokens, (*team, route, ("gen_ai.token.type", "input")))
        self.token_count.add(record.completion_tokens, (*team, route, ("gen_ai.token.type", "output")))
        if record.cost_usd:
            self.cost.add(record.cost_usd, team)

    def engine(self, backend: str, *, kv_usage: float, running: int, waiting: int) -> None:
        """Latest engine state (from /v1/engine/state or a vLLM /metrics scrape)."""
        attrs = {"hybridgw.backend": self._backend(backend)}
        self.kv_usage.set(kv_usage, attrs)
        self.running.set(running, attrs)
        self.waiting.set(waiting, attrs)
