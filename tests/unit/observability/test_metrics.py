"""Prometheus exposition of the GenAI metrics: names, semconv buckets, TPOT per request, counters, capped labels."""
from __future__ import annotations

import re

import pytest

from observability.metrics import TPOT_BOUNDS, TTFT_BOUNDS, RequestMetrics, build_metrics
from tests.unit.observability.conftest import record


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_exposition_has_the_genai_histograms_with_their_buckets() -> None:
    metrics = build_metrics()
    RequestMetrics(metrics.provider).record(record())
    text = metrics.exposition().decode()
    for name in ("gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds",
                 "gen_ai_server_request_duration_seconds", "gen_ai_client_token_usage"):
        assert f"# TYPE {name} histogram" in text
    ttft_bounds = re.findall(r'gen_ai_server_time_to_first_token_seconds_bucket\{[^}]*le="([^"]+)"', text)
    assert [float(b) for b in ttft_bounds if b != "+Inf"] == list(TTFT_BOUNDS)
    tpot_bounds = re.findall(r'gen_ai_server_time_per_output_token_seconds_bucket\{[^}]*le="([^"]+)"', text)
    assert [float(b) for b in tpot_bounds if b != "+Inf"] == list(TPOT_BOUNDS)
    assert 'gen_ai_request_model="gpt-4o-mini"' in text


def test_time_per_output_token_is_one_value_per_streamed_request_as_semconv_defines_it() -> None:
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider)
    # (duration − TTFT) / (output tokens − 1): (0.3 − 0.05) / 10 = 0.025, whatever the gaps were
    recorder.record(record(e2e_s=0.3, ttft_s=0.05, completion_tokens=11, itl_gaps_s=(0.01, 0.02, 0.2, 0.3)))
    recorder.record(record(stream=False, itl_gaps_s=()))  # a body at once: no token timing seen
    recorder.record(record(completion_tokens=1, itl_gaps_s=(0.1,)))  # no token after the first
    recorder.record(record(status="error", error_type="upstream_5xx"))  # successful responses only
    text = metrics.exposition().decode()
    assert _value(text, "gen_ai_server_time_per_output_token_seconds_count") == 1
    assert _value(text, "gen_ai_server_time_per_output_token_seconds_sum") == pytest.approx(0.025)
    assert _value(text, "gen_ai_server_time_per_output_token_seconds_bucket", le="0.025") == 1
    assert _value(text, "gen_ai_server_time_per_output_token_seconds_bucket", le="0.01") == 0


def test_counters_are_totals_read_at_collection() -> None:
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider)
    recorder.record(record(prompt_tokens=7, completion_tokens=0, cost_usd=0.0))
    assert 'hybridgw_tokens_total{gen_ai_token_type="output"' in metrics.exposition().decode()  # a 0 is a series
    recorder.record(record(prompt_tokens=5, completion_tokens=3, cost_usd=0.5))
    text = metrics.exposition().decode()
    assert _value(text, "hybridgw_requests_total", hybridgw_team="alpha") == 2
    assert _value(text, "hybridgw_tokens_total", gen_ai_token_type="input") == 12
    assert _value(text, "hybridgw_tokens_total", gen_ai_token_type="output") == 3
    assert _value(text, "hybridgw_cost_usd_total", hybridgw_team="alpha") == 0.5
    assert "# TYPE hybridgw_requests_total counter" in text


def test_team_label_is_capped() -> None:
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider, max_teams=3)
    for i in range(10):
        recorder.record(record(team=f"team-{i}"))
    text = metrics.exposition().decode()
    teams = set(re.findall(r'hybridgw_requests_total\{[^}]*hybridgw_team="([^"]+)"', text))
    assert teams == {"team-0", "team-1", "team-2", "other"}
    assert _value(text, "hybridgw_requests_total", hybridgw_team="other") == 7


def test_errors_and_engine_gauges() -> None:
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider)
    recorder.record(record(status="error", error_type="upstream_5xx"))
    recorder.engine("local", kv_usage=0.625, running=3, waiting=2)
    text = metrics.exposition().decode()
    assert _value(text, "gen_ai_server_request_duration_seconds_count", error_type="upstream_5xx") == 1
    assert _value(text, "gen_ai_server_time_to_first_token_seconds_count") == 0  # successful responses only
    assert _value(text, "hybridgw_engine_kv_cache_usage", hybridgw_backend="local") == 0.625
    assert _value(text, "hybridgw_engine_requests_waiting", hybridgw_backend="local") == 2


def test_views_give_the_gateways_own_instruments_the_same_buckets() -> None:
    metrics = build_metrics()
    ttft = metrics.provider.get_meter("hybridgw.gateway").create_histogram("gen_ai.server.time_to_first_token", unit="s")
    ttft.record(0.03)
    text = metrics.exposition().decode()
    assert 'le="0.04",otel_scope_name="hybridgw.gateway"' in text
    assert _value(text, "gen_ai_server_time_to_first_token_seconds_bucket", le="0.04") == 1


def test_two_builds_do_not_share_state() -> None:
    first, second = build_metrics(), build_metrics()
    RequestMetrics(first.provider).record(record())
    assert "hybridgw_requests_total{" not in second.exposition().decode()


def test_shadow_calls_are_told_apart_in_token_counts() -> None:
    """A shadow call's tokens are spend, not traffic: hybridgw.tokens says so by its route, and the
    per-request GenAI histogram (like the request duration) counts only the client's requests."""
    metrics = build_metrics()
    recorder = RequestMetrics(metrics.provider)
    recorder.record(record(prompt_tokens=10, completion_tokens=3))
    recorder.record(record(rule="shadow", prompt_tokens=10, completion_tokens=7))
    text = metrics.exposition().decode()
    assert _value(text, "gen_ai_client_token_usage_count") == 2  # input + output of the one client request
    assert _value(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 3
    assert _value(text, "hybridgw_tokens_total", gen_ai_token_type="output", hybridgw_route="shadow") == 7
    assert _value(text, "hybridgw_tokens_total", gen_ai_token_type="output") == 10
