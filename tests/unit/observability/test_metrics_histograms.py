"""Our own GenAI histograms (HistogramTotals) show in /metrics exactly what the SDK's Histogram showed for them."""
from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from observability.histogram_totals import HistogramTotals
from observability.metrics import DURATION_BOUNDS, RequestMetrics, build_metrics, genai_views
from tests.unit.observability.conftest import record

HISTOGRAMS = ("gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds",
              "gen_ai_server_request_duration_seconds", "gen_ai_client_token_usage")


def _sdk_metrics() -> tuple[RequestMetrics, CollectorRegistry]:
    """RequestMetrics on a provider as build_metrics made it before: the SDK's own histograms."""
    registry = CollectorRegistry(auto_describe=True)
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry, disable_target_info=True)],
                             views=genai_views(), resource=Resource.create({"service.name": "hybridgw"}),
                             exemplar_filter=AlwaysOffExemplarFilter())
    return RequestMetrics(provider), registry


def _records() -> list:  # type: ignore[type-arg]
    """Values on bucket bounds and between them, errors, shadow calls, streams, a rejection, many label sets."""
    out = []
    for i in range(60):
        out.append(record(e2e_s=[0.01, 0.3, 0.64, 0.0999, 7.77, 100.0][i % 6] + i * 1e-7, ttft_s=0.001 * (i % 9) + 0.0001,
                          prompt_tokens=[1, 4, 5, 1024, 70000][i % 5], completion_tokens=(i * 37) % 300,
                          itl_gaps_s=(0.01,) * (i % 3), stream=bool(i % 2), model_alias=f"m{i % 4}",
                          backend=["local", "openai", ""][i % 3], provider=["", "openai"][i % 2],
                          status=["ok", "ok", "error", "aborted", "rejected"][i % 5],
                          error_type=["", "upstream_5xx"][i % 2], rule=["default", "shadow"][int(i % 7 == 0)],
                          operation=["chat", "text_completion"][i % 2]))
    return out


def _families(text: str) -> dict[str, list[str]]:
    """Each histogram's lines (HELP, TYPE and samples), in exposition order."""
    return {name: [line for line in text.splitlines() if line.split(" ")[2 if line.startswith("#") else 0]
                   .split("{")[0].removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
                   .removesuffix("_created") == name] for name in HISTOGRAMS}


def test_the_histograms_expose_what_the_sdk_histograms_did() -> None:
    ours, sdk = build_metrics(), _sdk_metrics()
    recorder = RequestMetrics(ours.provider)
    assert isinstance(recorder.duration, HistogramTotals)  # the totals, not the SDK, on build_metrics' provider
    records = _records()
    for start in range(0, len(records), 20):  # scrapes between records: the sums add up per period as the SDK's
        for r in records[start:start + 20]:
            recorder.record(r)
            sdk[0].record(r)
        mine, theirs = _families(ours.exposition().decode()), _families(generate_latest(sdk[1]).decode())
        for name in HISTOGRAMS:
            assert mine[name] and mine[name] == theirs[name], name


def test_a_histogram_for_known_values() -> None:
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider)
    for e2e in (0.01, 0.015, 0.64, 100.0):  # 0.01 is in the 0.01 bucket (upper bounds are inclusive)
        recorder.record(record(e2e_s=e2e, model_alias="k", backend="b", provider="p"))
    recorder.record(record(e2e_s=float("nan"), model_alias="k", backend="b", provider="p"))  # dropped, as the SDK does
    lines = [line for line in metrics.exposition().decode().splitlines()
             if line.startswith("gen_ai_server_request_duration_seconds")]
    genai = 'gen_ai_operation_name="chat",gen_ai_provider_name="p",gen_ai_request_model="k",hybridgw_backend="b"'
    scope = 'otel_scope_name="hybridgw.observability",otel_scope_schema_url="",otel_scope_version=""'
    labels = f"{genai},{scope}"
    buckets = {"0.01": 1, "0.02": 2, "0.04": 2, "0.64": 3, "81.92": 3, "+Inf": 4}
    for le, count in buckets.items():
        assert f'gen_ai_server_request_duration_seconds_bucket{{{genai},le="{le}",{scope}}} {count}.0' in lines
    assert len(lines) == len(DURATION_BOUNDS) + 3  # buckets, +Inf, count, sum: one series only
    assert f"gen_ai_server_request_duration_seconds_count{{{labels}}} 4.0" in lines
    assert f"gen_ai_server_request_duration_seconds_sum{{{labels}}} {0.01 + 0.015 + 0.64 + 100.0!r}" in lines


def test_a_histogram_folds_attribute_sets_past_the_limit_into_overflow() -> None:
    histogram = HistogramTotals("h", "s", "", (1.0,))
    for i in range(2005):
        histogram.record(0.5, (("k", str(i)),))
    metric = histogram.metric()
    assert metric is not None
    points = metric.data.data_points
    assert len(points) == 2001
    assert points[-1].attributes == {"otel.metric.overflow": True} and points[-1].count == 5
