"""The engine loop with an fp8 KV pool: scales calibrated at load, the same answers as full precision;
the flags that choose scales and CUDA graphs, and what they refuse."""
from __future__ import annotations

import pytest
import torch

from local_engine.cli import config_from_args, parse_args
from local_engine.config import ConfigError, EngineConfig
from local_engine.engine_build import build_engine
from local_engine.kv_quant import FP8_DTYPE
from local_engine.loading import load_engine_model
from local_engine.sequence import FinishReason, SamplingParams, Sequence
from tests.unit.local_engine_core.test_engine import PROMPTS, run_all


def _answers(kv_dtype: str | None, **kw: object) -> tuple[list[tuple[list[int], str, FinishReason | None]], object]:
    loaded = load_engine_model("tiny-random", kv_dtype=kv_dtype, **kw)  # type: ignore[arg-type]
    engine = build_engine(EngineConfig(model="tiny-random", kv_dtype=kv_dtype), loaded)
    seqs = [Sequence(loaded.tokenizer.encode(p), SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True))
            for p in PROMPTS]
    out = run_all(engine, seqs)
    return [out[s.seq_id] for s in seqs], loaded.runner.kv_cache


def test_an_fp8_engine_calibrates_its_scales_and_answers_as_fp32() -> None:
    full, _ = _answers(None)
    fp8, cache = _answers("fp8")
    assert cache.dtype == FP8_DTYPE and cache.scales is not None  # type: ignore[attr-defined]
    scales = cache.scales  # type: ignore[attr-defined]
    assert not bool((scales == 1).all()) and torch.equal(torch.exp2(torch.log2(scales).round()), scales)
    for ids, text, reason in fp8:
        assert len(ids) == 16 and reason is FinishReason.LENGTH and text
    # random weights leave near-ties everywhere, so the paths part after a few tokens (with or without
    # scales: these K/V lie inside e4m3's range); the quality figures are bench/kv_fp8_quality.py's
    assert all(ids[:2] == ref[:2] for (ids, _, _), (ref, _, _) in zip(fp8, full)), (fp8, full)


def test_no_kv_scales_keeps_the_plain_cast() -> None:
    loaded = load_engine_model("tiny-random", kv_dtype="fp8", kv_scales=False)
    assert loaded.runner.kv_cache.dtype == FP8_DTYPE and loaded.runner.kv_cache.scales is None


def test_flags_reach_the_config() -> None:
    config = config_from_args(parse_args(["--kv-dtype", "fp8", "--no-kv-scales", "--no-cuda-graphs"]))
    assert (config.kv_dtype, config.kv_scales, config.cuda_graphs) == ("fp8", False, False)
    config = config_from_args(parse_args([]))
    assert (config.kv_scales, config.cuda_graphs) == (True, None)
    assert config_from_args(parse_args(["--cuda-graphs"])).cuda_graphs is True


def test_cuda_graphs_are_refused_with_deterministic_and_on_a_cpu() -> None:
    with pytest.raises(ConfigError, match="deterministic"):
        EngineConfig(cuda_graphs=True, deterministic=True)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        load_engine_model("tiny-random", device="cpu", cuda_graphs=True)
    assert load_engine_model("tiny-random", device="cpu").runner.graphs is None  # off on CPU by default
