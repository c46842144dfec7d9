"""The engine server's Prometheus metrics, on a registry made per app (no process-wide globals).

Latency names and buckets follow the OpenTelemetry GenAI semantic conventions; live engine
numbers (running, waiting, KV usage, preemptions) are read from the engine's snapshot at scrape.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from local_engine.engine import EngineStats

# Bucket bounds from the GenAI semantic conventions (gen_ai.server.*).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


class _SnapshotCollector(Collector):
    """Gauges and the preemption counter, read from the engine's latest snapshot at scrape time."""

    def __init__(self, snapshot: Callable[[], EngineStats], model: str) -> None:
        self._snapshot = snapshot
        self._model = model

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        gauges = (
            ("hybridgw_engine_num_requests_running", "Sequences in the running batch", s.num_running),
            ("hybridgw_engine_num_requests_waiting", "Sequences waiting to be scheduled", s.num_waiting),
            ("hybridgw_engine_kv_cache_usage_perc", "Share of KV blocks in use (0-1)", s.kv_usage),
            ("hybridgw_engine_kv_blocks_total", "KV blocks in the pool", s.num_blocks_total),
            ("hybridgw_engine_kv_blocks_free", "KV blocks free (or cached and evictable)", s.num_blocks_free),
            ("hybridgw_engine_prefix_cache_hit_rate", "Prompt tokens found in the prefix cache (0-1)",
             s.prefix_cache_hit_rate),
            ("hybridgw_engine_prefill_tokens_per_second", "Recent prefill tokens per busy second",
             s.prefill_tokens_per_s),
            ("hybridgw_engine_decode_tokens_per_second", "Recent decode tokens per busy second",
             s.decode_tokens_per_s),
        )
        for name, doc, value in gauges:
            gauge = GaugeMetricFamily(name, doc, labels=["model"])
            gauge.add_metric([self._model], float(value))
            yield gauge
        preemptions = CounterMetricFamily("hybridgw_engine_preemptions", "Sequences preempted (recomputed later)",
                                          labels=["model"])
        preemptions.add_metric([self._model], float(s.num_preemptions))
        yield preemptions


class EngineMetrics:
    """One app's metrics; also the RequestObserver the async engine reports latencies to."""

    def __init__(self, snapshot: Callable[[], EngineStats], model: str) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_SnapshotCollector(snapshot, model))
        labels = ["model"]
        self._ttft = Histogram("gen_ai_server_time_to_first_token_seconds", "Arrival to the first token shown as content",
                               labels, buckets=TTFT_BUCKETS, registry=self.registry).labels(model)
        self._itl = Histogram("gen_ai_server_time_per_output_token_seconds", "Time between outputs that carry content",
                              labels, buckets=TPOT_BUCKETS, registry=self.registry).labels(model)
        self._e2e = Histogram("gen_ai_server_request_duration_seconds", "Arrival to last token",
                              labels, buckets=DURATION_BUCKETS, registry=self.registry).labels(model)
        self._usage = Histogram("gen_ai_client_token_usage", "Tokens per request, by type",
                                labels + ["token_type"], buckets=TOKEN_BUCKETS, registry=self.registry)
        self._prompt_tokens = Counter("hybridgw_engine_prompt_tokens", "Prompt tokens prefilled (counted at the first token)",
                                      labels, registry=self.registry).labels(model)
        self._generation_tokens = Counter("hybridgw_engine_generation_tokens", "Tokens generated",
                                          labels, registry=self.registry).labels(model)
        self._finished = Counter("hybridgw_engine_requests_finished", "Requests that ran to the end",
                                 labels, registry=self.registry).labels(model)
        self._input_usage = self._usage.labels(model, "input")
        self._output_usage = self._usage.labels(model, "output")

    def prefilled(self, num_prompt_tokens: int) -> None:
        self._prompt_tokens.inc(num_prompt_tokens)

    def generated(self, num_tokens: int) -> None:
        self._generation_tokens.inc(num_tokens)

    def first_token(self, ttft_s: float) -> None:
        self._ttft.observe(ttft_s)

    def inter_token(self, itl_s: float) -> None:
        self._itl.observe(itl_s)

    def finished(self, e2e_s: float, num_prompt_tokens: int, num_completion_tokens: int) -> None:
        self._e2e.observe(e2e_s)
        self._input_usage.observe(num_prompt_tokens)
        self._output_usage.observe(num_completion_tokens)
        self._finished.inc()
