"""Engine state documents → snapshots: our JSON and vLLM's Prometheus text."""
from __future__ import annotations

import pytest

from policies.engine_state import parse_engine_state, parse_vllm_metrics, vllm_snapshot

STATE = {"model": "smollm2", "kv_bytes_per_token": 23040, "block_size": 16, "num_blocks_total": 512,
         "num_blocks_free": 400, "num_running": 2, "num_waiting": 1, "prefix_cache_hit_rate": 0.25,
         "prefill_tokens_per_s": 800.5, "decode_tokens_per_s": 60.0, "max_model_len": 8192, "healthy": True}


def test_engine_state_json() -> None:
    snap = parse_engine_state(STATE, taken_at=5.0)
    assert snap is not None
    assert (snap.num_blocks_total, snap.num_blocks_free, snap.num_waiting, snap.block_size) == (512, 400, 1, 16)
    assert snap.prefill_tokens_per_s == 800.5 and snap.max_model_len == 8192 and snap.taken_at == 5.0


def test_unhealthy_engine_has_no_snapshot_and_bad_fields_are_refused() -> None:
    assert parse_engine_state({**STATE, "healthy": False}, 0.0) is None
    with pytest.raises(ValueError, match="num_blocks_free"):
        parse_engine_state({**STATE, "num_blocks_free": "lots"}, 0.0)
    with pytest.raises(ValueError):
        parse_engine_state([1, 2], 0.0)
    assert parse_engine_state({**STATE, "num_blocks_free": 9999}, 0.0).num_blocks_free == 512  # clamped


VLLM = """\
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",num_gpu_blocks="2000"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} {prompt}
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} {gen}
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 400.0
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100.0
"""


def test_vllm_metrics_and_rates_between_polls() -> None:
    first = parse_vllm_metrics(VLLM.replace("{prompt}", "1000.0").replace("{gen}", "500.0"), taken_at=10.0)
    second = parse_vllm_metrics(VLLM.replace("{prompt}", "1500.0").replace("{gen}", "600.0"), taken_at=10.5)
    snap = vllm_snapshot(second, first, kv_bytes_per_token=131072)
    assert (snap.num_blocks_total, snap.num_blocks_free, snap.block_size) == (2000, 1500, 16)
    assert (snap.num_running, snap.num_waiting) == (3, 2)
    assert snap.prefill_tokens_per_s == pytest.approx(1000.0) and snap.decode_tokens_per_s == pytest.approx(200.0)
    assert snap.prefix_cache_hit_rate == pytest.approx(0.25) and snap.kv_bytes_per_token == 131072
    assert vllm_snapshot(first, None).decode_tokens_per_s == 0.0
