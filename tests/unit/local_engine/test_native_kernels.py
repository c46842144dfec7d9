"""The native kernels against torch: the 4-bit matmul and its fused prologues / epilogues, and RoPE.

Tolerances come from the arithmetic: the kernel sums in float32 (at most K * 2^-24 of the summed
magnitudes off, with a margin of 2 for the split into scale and zero terms) and rounds a bf16 output
once (2^-8 of its value at most); bit-equality where the kernel promises it (rows and threads). The
decode attention against the reference path over the same paged cache.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from local_engine.attention import build_attention_metadata, paged_attention_reference, write_kv
from local_engine.model import rope_, rope_cos_sin
from local_engine.native.kernels import (
    DEFAULT_SPLIT_WORK,
    OUT_HALVES,
    OUT_RESIDUAL,
    X_RMSNORM,
    X_SILU_MUL,
    pack_q4,
)
from local_engine.native.paged_decode import native_decode_attention
from local_engine.weights import int4_effective_weight

from .native_support import codes, native_kernels


def effective(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return int4_effective_weight(q, scale, zero, torch.float64)  # exact: bf16 scale/zero, small codes


def accumulation_bound(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """float32 summation error bound of x (S, K) against the codes: the kernel sums s * (q + 128) * x
    (codes enter as bf16 128 + q where the CPU has bf16 dot products; else q) and (z - 136 s) * x
    separately, so the magnitudes of both terms count."""
    s = scale.to(torch.bfloat16).double().repeat_interleave(32, 1)
    z = zero.to(torch.bfloat16).double().repeat_interleave(32, 1)
    magnitude = x.double().abs() @ ((q.double() + 128) * s + (z - 136 * s).abs()).T
    return 2 * x.shape[1] * 2.0 ** -24 * magnitude + 1e-30


@pytest.mark.parametrize("rows", [1, 3, 4, 7])
def test_the_4bit_matmul_is_the_effective_weight_product_rounded_once(rows: int) -> None:
    kernels = native_kernels()
    q, scale, zero = codes(200, 576, seed=rows)
    x = torch.randn(rows, 576).to(torch.bfloat16)
    out = kernels.q4_linear(pack_q4(q, scale, zero), x).double()
    exact = x.double() @ effective(q, scale, zero).T
    acc = accumulation_bound(x, q, scale, zero)
    assert ((out - exact).abs() <= 2.0 ** -8 * (exact.abs() + acc) + acc).all()


def test_a_row_does_not_depend_on_the_other_rows_or_the_threads() -> None:
    one, two = native_kernels(threads=1), native_kernels(threads=2)
    w = pack_q4(*codes(3072, 1536, seed=5))  # above the kernels' threshold for using a second thread
    x = torch.randn(9, 1536).to(torch.bfloat16)
    alone = torch.cat([one.q4_linear(w, x[i:i + 1]) for i in range(9)])
    assert torch.equal(two.q4_linear(w, x), alone)  # passes of 4, 4 and 1 rows on two threads
    assert torch.equal(one.q4_linear(w, x[2:5]), alone[2:5])
    two.set_threading(use_openmp=True)  # OpenMP instead of the pool (the default)
    try:
        assert torch.equal(two.q4_linear(w, x), alone)
    finally:
        two.set_threading(use_openmp=False, min_work=DEFAULT_SPLIT_WORK)


def test_rmsnorm_prologue_and_residual_epilogue_match_the_torch_layer() -> None:
    kernels = native_kernels()
    q, scale, zero = codes(64, 128, seed=1)
    x, norm, residual = torch.randn(3, 128) * 3, torch.rand(128) + 0.5, torch.randn(3, 64)
    out = kernels.q4_linear(pack_q4(q, scale, zero), x, x_mode=X_RMSNORM, norm=norm, eps=1e-5,
                            out_mode=OUT_RESIDUAL, residual=residual)
    h = F.rms_norm(x, (128,), norm, 1e-5).to(torch.bfloat16)  # as DecoderLayer.forward
    product = h.double() @ effective(q, scale, zero).T
    acc = accumulation_bound(h, q, scale, zero)
    assert out.dtype == torch.float32
    # h may round differently where the norm's float32 sums differ in the last bit: one bf16 step of an input
    slack = 2.0 ** -7 * (h.double().abs() @ effective(q, scale, zero).abs().T)
    assert ((out.double() - residual.double() - product).abs()
            <= 2.0 ** -8 * (product.abs() + acc + slack) + acc + slack + 1e-6).all()


def test_silu_mul_prologue_matches_torch() -> None:
    kernels = native_kernels()
    q, scale, zero = codes(64, 256, seed=2)
    w = pack_q4(q, scale, zero)
    gate_up = (torch.randn(2, 512) * 2).to(torch.bfloat16)
    gate, up = gate_up.view(2, 2, -1).unbind(1)
    act = F.silu(gate).mul_(up)  # (2, 256) bf16, as DecoderLayer.forward
    fused = kernels.q4_linear(w, gate_up, x_mode=X_SILU_MUL).double()
    plain = kernels.q4_linear(w, act).double()
    # the kernel's exp may differ from torch's in the last float32 bit: one bf16 step of an activation
    slack = 2.0 ** -7 * (act.double().abs() @ effective(q, scale, zero).abs().T)
    assert ((fused - plain).abs() <= 2.0 ** -8 * (plain.abs() + slack) + slack).all()
    assert (fused == plain).float().mean() > 0.9  # mostly bit-equal: the same roundings as torch


def test_halves_sum_two_row_blocks_in_float32() -> None:
    kernels = native_kernels()
    q, scale, zero = codes(128, 64, seed=3)
    x = torch.randn(1, 64).to(torch.bfloat16)
    out = kernels.q4_linear(pack_q4(q, scale, zero), x, out_mode=OUT_HALVES).double()  # (1, 64)
    full = x.double() @ effective(q, scale, zero).T
    acc = accumulation_bound(x, q, scale, zero)
    assert out.shape == (1, 64)
    assert ((out - (full[:, :64] + full[:, 64:])).abs() <= acc[:, :64] + acc[:, 64:] + 2.0 ** -24 * out.abs()).all()


def test_rope_matches_the_torch_rotation() -> None:
    kernels = native_kernels()
    heads, kv_heads, d = 4, 2, 64
    table = rope_cos_sin(1.0 / (10000 ** (torch.arange(0, d, 2).float() / d)), 512)
    cos_sin = table[torch.tensor([0, 7, 300, 511])].to(torch.bfloat16)  # (T, 2, D)
    cos, sin_signed = cos_sin[:, 0:1], cos_sin[:, 1:2]
    qkv = torch.randn(4, (heads + 2 * kv_heads) * d).to(torch.bfloat16)
    ref = qkv.clone().view(4, -1, d)
    rope_(ref[:, :heads + kv_heads], cos, sin_signed)
    out = qkv.clone()
    kernels.rope_(out, heads + kv_heads, d, cos, sin_signed)
    out = out.view(4, -1, d)
    assert torch.equal(out[:, heads + kv_heads:], qkv.view(4, -1, d)[:, heads + kv_heads:])  # v untouched
    # same two roundings as torch; allow one bf16 step where an fp32 product differs in its last bit
    assert ((out.float() - ref.float()).abs() <= 2.0 ** -7 * ref.float().abs() + 1e-6).all()
    assert (out == ref).float().mean() > 0.99


@pytest.mark.parametrize(("lengths", "heads"), [([1], 6), ([37], 6), ([5, 70, 16], 6), ([300], 16), ([9, 23], 2)])
def test_paged_decode_stores_the_token_and_attends_like_the_reference(lengths: list[int], heads: int) -> None:
    kernels = native_kernels()
    kv_heads, d, bs = 2, 64, 16
    torch.manual_seed(len(lengths))
    cache = torch.zeros(2 * kv_heads, 32, bs, d, dtype=torch.bfloat16)
    free = list(range(31, 0, -1))  # block 0 stays empty: padding reads it, the mask must hide it
    tables = [[free.pop() for _ in range(-(-n // bs))] for n in lengths]
    for table, n in zip(tables, lengths):  # the context before the new token
        slots = torch.tensor([table[p // bs] * bs + p % bs for p in range(n - 1)], dtype=torch.int64)
        write_kv(cache, torch.randn(n - 1, kv_heads, d), torch.randn(n - 1, kv_heads, d), slots)
    qkv = torch.randn(len(lengths), heads + 2 * kv_heads, d).to(torch.bfloat16)  # the step's rows
    q, k, v = qkv[:, :heads], qkv[:, heads:heads + kv_heads], qkv[:, heads + kv_heads:]
    expected_cache = cache.clone()
    meta = build_attention_metadata(tables, [n - 1 for n in lengths], [1] * len(lengths), block_size=bs,
                                    num_heads=heads, num_kv_heads=kv_heads, dtype=torch.bfloat16,
                                    device=torch.device("cpu"))
    write_kv(expected_cache, k, v, meta.slot_mapping)
    expected = paged_attention_reference(q, expected_cache, meta)  # float32 math, one bf16 rounding
    attend = native_decode_attention(kernels, cache[None], heads, tables, [n - 1 for n in lengths], [1] * len(lengths))
    assert attend is not None
    out = attend(0, q, k, v)
    assert torch.equal(cache, expected_cache)
    # float32 sums in another order: a rounding tipped at most one bf16 step (2^-7 of the value)
    assert ((out.float() - expected.float()).abs() <= 2.0 ** -7 * expected.float().abs() + 1e-6).all()


def test_paged_decode_leaves_other_steps_to_torch() -> None:
    kernels = native_kernels()
    cache = torch.zeros(1, 4, 8, 16, 64, dtype=torch.bfloat16)
    assert native_decode_attention(kernels, cache, 4, [[1]], [0], [1]) is not None
    assert native_decode_attention(kernels, cache, 4, [[1], [2]], [0, 3], [1, 2]) is None  # a prompt chunk
    assert native_decode_attention(kernels, cache, 4, [[1]] * 64, [0] * 64, [1] * 64) is not None  # any count
    assert native_decode_attention(kernels, cache, 4, [[1]] * 4, [0] * 4, [1] * 4, max_seqs=3) is None  # capped
    assert native_decode_attention(kernels, cache.float(), 4, [[1]], [0], [1]) is None  # not bf16
    assert native_decode_attention(kernels, cache, 40, [[1]], [0], [1]) is None  # 20 query heads a KV head
    assert native_decode_attention(None, cache, 4, [[1]], [0], [1]) is None


def test_inputs_that_do_not_fit_are_refused_not_misread() -> None:
    kernels = native_kernels()
    w = pack_q4(*codes(64, 128, seed=4))
    with pytest.raises(ValueError):
        kernels.q4_linear(w, torch.randn(1, 128))  # float32 where bf16 is read
    with pytest.raises(ValueError):
        kernels.q4_linear(w, torch.randn(1, 128), x_mode=X_RMSNORM)  # no norm weight
    with pytest.raises(ValueError):
        kernels.q4_linear(w, torch.randn(1, 64).to(torch.bfloat16))  # K mismatch
    with pytest.raises(ValueError):
        kernels.q4_linear(w, torch.randn(1, 128).to(torch.bfloat16), out_mode=OUT_RESIDUAL,
                          residual=torch.zeros(1, 64, dtype=torch.bfloat16))
