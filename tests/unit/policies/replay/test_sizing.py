"""`hybridgw size`'s arithmetic on a synthetic ISL/OSL histogram whose answer is worked out by hand."""
from __future__ import annotations

import pytest

from policies.perf_model import EngineModel
from policies.replay.sizing import Demand, busy_rate, size_engine

# Prefill 1 ms/token; decode step 10 ms + 1 ms per sequence; a large pool.
MODEL = EngineModel(prefill_fixed_s=0.0, prefill_per_token_s=0.001, decode_fixed_s=0.01, decode_per_seq_s=0.001,
                    decode_per_context_token_s=0.0, num_blocks=100_000, max_model_len=8192, max_num_seqs=64)
# 90 requests of 800 + 200 tokens, 10 of 4800 + 200; spilling one costs $0.01.
DEMAND = Demand((800,) * 90 + (4800,) * 10, (200,) * 100, (0.01,) * 100, rate_per_s=10.0)


def test_percentile_sets_the_context_and_the_local_share() -> None:
    p90 = size_engine(DEMAND, MODEL, 90.0, slo_s=1.0)
    assert (p90.max_context, p90.local_share) == (1008, 0.9)  # 1000 rounded up to whole 16-token blocks
    p95 = size_engine(DEMAND, MODEL, 95.0, slo_s=1.0)
    assert (p95.max_context, p95.local_share) == (5008, 1.0)


def test_batch_replicas_and_spill() -> None:
    s = size_engine(DEMAND, MODEL, 90.0, slo_s=1.0)
    # TTFT = step(B) + prefill(800) = 0.01 + 0.001 B + 0.8 ≤ 1.0 for every B up to max_num_seqs.
    assert s.max_batch == 64 and s.ttft_estimate_s == pytest.approx(0.874)
    # One request: prefill 0.8 s + 200 × step(64) / 64 = 0.8 + 0.23125 s → 0.9697 req/s per replica;
    # 9 req/s local at ≤ 80% busy → ceil(9 / 0.7758) = 12 replicas.
    assert s.replica_requests_per_s == pytest.approx(1 / 1.03125)
    assert s.replicas == 12
    assert s.spill_rate_per_s == pytest.approx(1.0)
    assert s.spill_cost_usd_per_hour == pytest.approx(36.0)
    assert s.kv_dtype == "bf16"


def test_tight_slo_cuts_the_batch_and_fp8_when_capacity_binds() -> None:
    assert size_engine(DEMAND, MODEL, 90.0, slo_s=0.8305).max_batch == 20  # 0.81 + 0.001 B ≤ 0.8305
    small = EngineModel(**{**MODEL.__dict__, "num_blocks": 2000})  # 32k tokens of KV
    s = size_engine(DEMAND, small, 90.0, slo_s=1.0)  # 64 × 1000 tokens need ~4.1k blocks
    assert s.kv_dtype == "fp8" and s.kv_bytes_per_token == MODEL.kv_bytes_per_token // 2
    assert s.kv_pool_bytes <= small.kv_pool_bytes


def test_busy_rate_is_the_busy_minute() -> None:
    times = [float(i) for i in range(60)] + [60 + i / 10 for i in range(300)] + [120.0 + i for i in range(60)]
    assert busy_rate(times) == pytest.approx(300 / 60)
    assert busy_rate([0.0, 1.0, 2.0, 10.0]) == pytest.approx(0.4)


def test_other_context_choices_show_share_and_spill() -> None:
    choices = {c.percentile: c for c in size_engine(DEMAND, MODEL, 90.0, slo_s=1.0).choices}
    assert (choices[50.0].max_context, choices[50.0].local_share) == (1008, 0.9)
    assert choices[99.0].local_share == 1.0 and choices[99.0].spill_cost_usd_per_hour == 0.0
    # p90: the 10 long requests spill, $0.01 each, at 10 req/s = 1 spilled req/s → $36/hour
    assert choices[90.0].spill_cost_usd_per_hour == pytest.approx(36.0)


def test_busy_rate_of_a_window_counts_only_its_minutes() -> None:
    # A week: 100 requests in each 09:00 UTC hour, nothing else. The window's busy minute is
    # 100 / 60 requests per minute, though its minutes are under 5% of the week's.
    day0 = 1_795_478_400.0  # a midnight UTC
    times = [day0 + d * 86400 + 9 * 3600 + 36 * k for d in range(7) for k in range(100)]
    assert busy_rate(times, hours=(9, 10)) == pytest.approx(2 / 60)  # 1 or 2 a minute: p95 is 2
    assert busy_rate(times, hours=(12, 13)) == 0.0
