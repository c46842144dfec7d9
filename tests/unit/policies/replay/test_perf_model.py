"""The performance model: step-time formulas, hosted distributions, and reading a model file."""
from __future__ import annotations

from dataclasses import replace

import pytest

from policies.perf_model import (
    EngineModel,
    HostedModel,
    PerfModelError,
    perf_model_from_mapping,
    predict_engine,
    predict_hosted,
)


def test_decode_run_time_is_the_sum_of_its_steps() -> None:
    model = EngineModel(decode_fixed_s=0.01, decode_per_seq_s=0.001, decode_per_context_token_s=1e-5)
    steps = [model.decode_time(8, 1000 + 8 * k) for k in range(50)]
    assert model.decode_run_time(8, 1000, 50) == pytest.approx(sum(steps))
    assert model.decode_time(8, 1000) == pytest.approx(0.01 + 0.008 + 0.01)


def test_default_engine_is_the_cpu_smollm2_and_its_figures_hold_together() -> None:
    model = EngineModel()
    assert model.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2  # SmolLM2-135M, bf16
    assert model.kv_pool_bytes <= 1 << 30  # the CPU engine's default pool
    assert 0.050 < model.decode_time(64, 64 * 103) < 0.060  # 52–55 ms measured at batch 64
    assert model.prefill_time(0) == model.prefill_fixed_s
    assert model.decode_tokens_per_s(64, 103) > model.decode_tokens_per_s(1, 103)


def test_hosted_ttft_and_speed_quantiles() -> None:
    hosted = HostedModel(ttft_p50_s=0.5, ttft_p95_s=2.0, tokens_per_s_p50=100, tokens_per_s_p05=50)
    assert hosted.ttft(0.0) == pytest.approx(0.5)
    assert hosted.ttft(1.6448536) == pytest.approx(2.0, rel=1e-6)
    assert hosted.tokens_per_s(-1.6448536) == pytest.approx(50.0, rel=1e-6)


def test_model_file_by_backend_with_defaults() -> None:
    perf = perf_model_from_mapping({
        "engines": {"default": {"num_blocks": 10}, "gpu": {"decode_fixed_s": 0.005, "source": "measured"}},
        "hosted": {"openai": {"ttft_p50_s": 0.3, "ttft_p95_s": 0.9, "requests_per_minute": 500}}})
    assert perf.engine("gpu").decode_fixed_s == 0.005 and perf.engine("gpu").num_blocks == EngineModel().num_blocks
    assert perf.engine("local").num_blocks == 10  # not named: the file's default
    assert perf.hosted_model("openai").requests_per_minute == 500
    assert perf.hosted_model("anthropic") == HostedModel()


@pytest.mark.parametrize(("data", "message"), [
    ({"engine": {}}, "unknown top-level field 'engine'"),
    ({"engines": {"local": {"num_block": 3}}}, "engines.local: unknown field 'num_block'"),
    ({"engines": {"local": {"num_blocks": 2.5}}}, "engines.local.num_blocks must be int"),
    ({"engines": {"local": {"num_blocks": 0}}}, "num_blocks must be an integer ≥ 1"),
    ({"hosted": {"x": {"ttft_p50_s": 2.0, "ttft_p95_s": 1.0}}}, "ttft_p50_s ≤ ttft_p95_s"),
    ({"hosted": {"x": {"requests_per_minute": True}}}, "requests_per_minute must be int"),
    ([1, 2], "is a mapping"),
])
def test_bad_model_files_name_the_field(data: object, message: str) -> None:
    with pytest.raises(PerfModelError, match=message):
        perf_model_from_mapping(data)


def test_engine_prediction_queue_ahead_prefix_and_decode() -> None:
    model = EngineModel(prefill_fixed_s=0.05, prefill_per_token_s=0.001, decode_fixed_s=0.01, decode_per_seq_s=0.001,
                        decode_per_context_token_s=0.0, max_num_batched_tokens=1000)
    alone = predict_engine(model, prompt_tokens=500, output_tokens=11)
    assert alone.ttft_s == pytest.approx(0.05 + 0.5)
    assert alone.e2e_s == pytest.approx(0.55 + 10 * 0.011)
    cached = predict_engine(model, prompt_tokens=500, output_tokens=11, cached_tokens=400)
    assert cached.ttft_s == pytest.approx(0.05 + 0.1)
    # 1,500 queued prompt tokens ahead + its own 500, 4 decoding: each step decodes the 4 (14 ms) and
    # prefills 996 of the 1,000-token budget, so 3 steps after the one in progress.
    busy = predict_engine(model, prompt_tokens=500, output_tokens=11, queued_prompt_tokens=1500, num_running=4)
    # A mixed step is one pass: its prefill adds only its fixed cost beyond the decode's (50 − 10 ms).
    assert busy.ttft_s == pytest.approx(4 * 0.014 + 3 * 0.04 + 2.0)
    assert busy.e2e_s == pytest.approx(busy.ttft_s + 10 * 0.015)
    # Rates measured now replace the model's: a 0.2 s decode step, 2 ms per prefill token (fixed cost in it).
    live = predict_engine(model, prompt_tokens=500, output_tokens=11, queued_prompt_tokens=1500, num_running=4,
                          decode_step_s=0.2, prefill_token_s=0.002)
    assert live.ttft_s == pytest.approx(4 * 0.2 + 2000 * 0.002)
    # Idle: a burst of prompts goes in one step up to the idle budget, without decodes to wait for.
    idle = predict_engine(replace(model, max_num_batched_tokens=64, max_idle_batched_tokens=2048), prompt_tokens=500,
                          output_tokens=11, queued_prompt_tokens=1500)
    assert idle.ttft_s == pytest.approx(0.05 + 2.0)
    narrow = predict_engine(replace(model, max_num_batched_tokens=64), prompt_tokens=500, output_tokens=11,
                            queued_prompt_tokens=1500, num_running=14)  # 50 prefill tokens a step: 40 steps
    assert narrow.ttft_s == pytest.approx(41 * model.decode_time(14, 0) + 40 * 0.04 + 2.0)
    late = predict_engine(replace(model, request_overhead_s=0.2), prompt_tokens=500, output_tokens=11)
    assert late.ttft_s == pytest.approx(0.2 + 0.55) and late.e2e_s == pytest.approx(0.2 + 0.55 + 10 * 0.011)


def test_hosted_prediction_is_the_slow_tail_by_default() -> None:
    hosted = HostedModel(ttft_p50_s=0.5, ttft_p95_s=2.0, tokens_per_s_p50=100, tokens_per_s_p05=50)
    slow = predict_hosted(hosted, 101)
    assert slow.ttft_s == pytest.approx(2.0) and slow.e2e_s == pytest.approx(2.0 + 100 / 50)
    assert predict_hosted(hosted, 101, z=0.0).e2e_s == pytest.approx(0.5 + 1.0)
