"""FP8 KV with per-layer, per-head scales: round-trip error within e4m3's precision, scales calibrated
and used by every attention path, and a model's output through an FP8 pool close to full precision."""
from __future__ import annotations

import pytest
import torch

from local_engine.attention import (
    build_attention_metadata,
    paged_attention,
    paged_attention_reference,
    write_kv,
)
from local_engine.invariant_attention import build_row_groups, invariant_attention
from local_engine.kv_cache import KVCacheError, PagedKVCache
from local_engine.kv_calibration import calibrate_scales, kv_absmax
from local_engine.kv_quant import (
    FP8_DTYPE,
    FP8_MAX,
    HEADROOM,
    dequantize,
    quantize,
    round_trip_bound,
    scales_from_absmax,
)
from local_engine.sequence import Sequence
from tests.unit.local_engine.helpers import (
    BlockPool,
    dense_attention,
    greedy,
    make_runner,
    step,
    tiny_config,
    tiny_model,
)

# heads of very different magnitude: e4m3 alone spans 2^-9 .. 448, so 1e-3 and 1e3 both fall out of it
MAGNITUDES = torch.tensor([1e-3, 0.05, 1.0, 30.0, 1e3, 3.0])


def _heads(T: int = 40, D: int = 16, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(MAGNITUDES), T, D, generator=gen) * MAGNITUDES[:, None, None]  # (2*KVH, T, D)


def test_scales_are_powers_of_two_that_put_the_absmax_below_the_headroom() -> None:
    absmax = torch.tensor([1e-3, 0.3, 1.0, 111.9, 112.0, 112.1, 5e4, 0.0])
    s = scales_from_absmax(absmax)
    assert torch.equal(torch.exp2(torch.log2(s).round()), s)
    scaled = absmax[:-1] / s[:-1]
    assert bool(((scaled > FP8_MAX / (2 * HEADROOM)) & (scaled <= FP8_MAX / HEADROOM)).all()), scaled
    assert s[-1] == 1.0  # a head that never saw a value keeps the plain cast


def test_round_trip_error_is_within_e4m3_half_ulp() -> None:
    x = _heads()
    scales = scales_from_absmax(x.abs().amax(dim=(1, 2)))
    back = dequantize(quantize(x, scales), FP8_DTYPE, torch.float32, scales)
    err, bound = (back - x).abs(), round_trip_bound(x, scales)
    assert bool((err <= bound).all())
    # the bound is e4m3's, not a loose one: some element comes close to it
    assert float((err / bound).max()) > 0.9
    # relative error of the normal range: at most 2^-4, whatever the head's magnitude
    big = x.abs() > 2.0 ** -6 * scales[:, None, None]
    assert float(((back - x).abs()[big] / x.abs()[big]).max()) <= 2.0 ** -4


def test_the_plain_cast_loses_small_and_large_heads() -> None:
    x = _heads()
    plain = x.to(FP8_DTYPE).float()
    ones = torch.ones(len(MAGNITUDES))
    rel = ((plain - x).abs() / x.abs().clamp_min(1e-12)).amax(dim=(1, 2))
    assert rel[0] > 0.3  # 1e-3: subnormal steps of 2^-9 (or flushed to 0)
    assert rel[4] > 0.5  # 1e3: clamped at 448
    assert not bool(((plain - x).abs() <= round_trip_bound(x, ones)).all())


def test_dequantize_is_exact_in_bf16_and_reads_the_uint8_bytes() -> None:
    x = _heads()
    scales = scales_from_absmax(x.abs().amax(dim=(1, 2)))
    stored = quantize(x, scales)
    as_f32 = dequantize(stored, FP8_DTYPE, torch.float32, scales)
    assert torch.equal(dequantize(stored, FP8_DTYPE, torch.bfloat16, scales).float(), as_f32)
    assert torch.equal(dequantize(stored.view(torch.uint8), FP8_DTYPE, torch.float32, scales), as_f32)
    assert stored.view(torch.uint8).data_ptr() == stored.data_ptr()  # dequantize copied, did not alias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_cpu_lookup_decodes_every_code_as_torchs_cast(dtype: torch.dtype) -> None:
    codes = torch.arange(256, dtype=torch.uint8).view(2, 8, 16)
    want = codes.view(FP8_DTYPE).to(dtype)
    got = dequantize(codes, FP8_DTYPE, dtype, None)
    assert got.dtype == dtype and torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())


def _attention_case(scaled: bool):
    H, KVH, D, BS, NB = 6, 3, 16, 4, 32
    lens, cached = [9, 14, 5, 7], [8, 13, 4, 6]  # a decode step of four sequences: the bmm path
    gen = torch.Generator().manual_seed(1)
    perm = torch.randperm(NB, generator=gen).tolist()
    tables = [[perm.pop() for _ in range(-(-n // BS))] for n in lens]
    mags = MAGNITUDES.view(2, KVH)  # K heads then V heads
    full = [(torch.randn(n, H, D, generator=gen) * 0.05,
             torch.randn(n, KVH, D, generator=gen) * mags[0][None, :, None],
             torch.randn(n, KVH, D, generator=gen) * mags[1][None, :, None]) for n in lens]
    scales = scales_from_absmax(MAGNITUDES * 3) if scaled else None
    cache = torch.zeros(2 * KVH, NB, BS, D, dtype=FP8_DTYPE)
    kw = {"block_size": BS, "num_heads": H, "num_kv_heads": KVH, "dtype": torch.float32, "device": torch.device("cpu")}
    pre = build_attention_metadata(tables, [0] * 4, cached, **kw)
    write_kv(cache, torch.cat([f[1][:c] for f, c in zip(full, cached)]),
             torch.cat([f[2][:c] for f, c in zip(full, cached)]), pre.slot_mapping, scales)
    meta = build_attention_metadata(tables, cached, [1] * 4, **kw)
    q = torch.cat([f[0][c:] for f, c in zip(full, cached)])
    write_kv(cache, torch.cat([f[1][c:] for f, c in zip(full, cached)]),
             torch.cat([f[2][c:] for f, c in zip(full, cached)]), meta.slot_mapping, scales)
    expected = torch.cat([dense_attention(0, *f)[c:] for f, c in zip(full, cached)])
    rows = build_row_groups(tables, cached, [1] * 4, head_dim=D, **kw)
    return q, cache, meta, rows, scales, expected


@pytest.mark.parametrize("path", ["fast", "reference", "invariant"])
def test_every_attention_path_reads_the_scales(path: str) -> None:
    def run(scaled: bool) -> tuple[torch.Tensor, torch.Tensor]:
        q, cache, meta, rows, scales, expected = _attention_case(scaled)
        if path == "invariant":
            return invariant_attention(q, cache, rows, scales), expected
        return (paged_attention if path == "fast" else paged_attention_reference)(q, cache, meta, scales), expected

    out, expected = run(scaled=True)
    # per V head the output is a convex mix of its values: relative error of e4m3 times the head's scale
    v_mag = MAGNITUDES[3:].repeat_interleave(2)[None, :, None]  # (1, H, 1): G = 2 query heads per KV head
    assert bool(((out - expected).abs() / v_mag).amax() < 0.25)
    plain, _ = run(scaled=False)  # the old plain cast: the 1e-3 V head is gone, the 1e3 K head saturates
    assert float(((plain - expected).abs() / v_mag).amax()) > 0.5


def test_the_pool_holds_scales_only_when_fp8_and_scaled() -> None:
    cfg = tiny_config()
    assert PagedKVCache(cfg, 4, 4, torch.bfloat16, "cpu").scales is None
    assert PagedKVCache(cfg, 4, 4, FP8_DTYPE, "cpu", scaled=False).scales is None
    pool = PagedKVCache(cfg, 4, 4, FP8_DTYPE, "cpu")
    assert pool.scales is not None and pool.scales.shape == (cfg.num_layers, 2 * cfg.num_kv_heads)
    with pytest.raises(KVCacheError):
        pool.set_scales(torch.ones(1, 1))
    with pytest.raises(KVCacheError):
        PagedKVCache(cfg, 4, 4, torch.bfloat16, "cpu").set_scales(torch.ones(2, 4))


def _loud_model():
    """The tiny model with K 300x and V 1/1000x larger: outside e4m3's range without scales."""
    model = tiny_model()
    cfg = model.config
    for layer in model.decoder_layers:
        w = layer.qkv_proj.weight.data
        w[cfg.q_size:cfg.q_size + cfg.kv_size] *= 300.0
        w[cfg.q_size + cfg.kv_size:] *= 1e-3
    return model


def test_calibration_finds_each_heads_range() -> None:
    model = _loud_model()
    seqs = [[5, 9, 100, 7, 300, 41, 2, 19] * 4, [1, 77, 12]]
    absmax = kv_absmax(model, seqs, torch.device("cpu"))
    kvh = model.config.num_kv_heads
    assert bool((absmax[:, :kvh] > 50).all()) and bool((absmax[:, kvh:] < 0.05).all())
    scales = calibrate_scales(model, seqs, torch.device("cpu"))
    assert torch.equal(scales, scales_from_absmax(absmax))


def _generate(model, kv_dtype, calibrate: bool | None, prompts, attention: str = "fast"):
    runner = make_runner(model, num_blocks=128, kv_dtype=kv_dtype, attention=attention)
    if calibrate is not None:
        runner = type(runner)(model, model.config, device="cpu", dtype=model.dtype, kv_dtype=kv_dtype,
                              num_blocks=128, block_size=4, attention=attention, kv_scaled=calibrate)
        runner.calibrate_kv_scales([p * 3 for p in prompts])
    pool = BlockPool(128)
    seqs = [Sequence(list(p), greedy(12)) for p in prompts]
    step(runner, pool, seqs, [s.num_tokens for s in seqs], True)
    for _ in range(11):
        step(runner, pool, seqs, [1] * len(seqs), False)
    return runner, [s.completion_token_ids for s in seqs]


PROMPTS = [[5, 9, 100, 7, 300, 41], [1, 77, 12, 400, 3, 3, 90, 8, 16, 250], [33, 2, 501], [60, 61, 62, 63, 64]]


@pytest.mark.parametrize("attention", ["fast", "deterministic"])
def test_a_runner_with_a_scaled_fp8_pool_follows_full_precision(attention: str) -> None:
    model = _loud_model()
    _, full = _generate(model, None, None, PROMPTS, attention)
    runner, scaled = _generate(model, FP8_DTYPE, True, PROMPTS, attention)
    assert runner.kv_cache.scales is not None and not bool((runner.kv_cache.scales == 1).all())
    _, plain = _generate(model, FP8_DTYPE, False, PROMPTS, attention)  # the old plain cast
    agree = sum(a == b for f, s in zip(full, scaled) for a, b in zip(f, s))
    agree_plain = sum(a == b for f, p in zip(full, plain) for a, b in zip(f, p))
    assert agree >= 0.9 * 48, (agree, full, scaled)
    assert agree_plain < agree, (agree_plain, agree)
