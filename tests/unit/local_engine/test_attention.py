"""Paged attention (reference and fast paths) equals dense causal attention."""
from __future__ import annotations

import pytest
import torch

from local_engine.attention import (
    build_attention_metadata,
    paged_attention,
    paged_attention_reference,
    write_kv,
)
from tests.unit.local_engine.helpers import dense_attention

H, KVH, D, BS, NUM_BLOCKS = 6, 2, 8, 4, 64


def _kw(dtype: torch.dtype) -> dict:
    return {"block_size": BS, "num_heads": H, "num_kv_heads": KVH, "dtype": dtype, "device": torch.device("cpu")}


def _setup(seq_lens: list[int], cached: list[int], dtype: torch.dtype = torch.float32, seed: int = 0):
    """Random K/V for whole sequences; the cached prefix is written first, the rest is 'this step'."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(NUM_BLOCKS, generator=gen).tolist()
    tables, full = [], []
    for n in seq_lens:
        need = -(-n // BS)
        tables.append([perm.pop() for _ in range(need)])
        full.append(tuple(torch.randn(n, h, D, generator=gen, dtype=torch.float32).to(dtype)
                          for h in (H, KVH, KVH)))
    cache = torch.zeros(2 * KVH, NUM_BLOCKS, BS, D, dtype=dtype)
    prefix = [n for n in cached]
    if any(prefix):
        meta = build_attention_metadata(tables, [0] * len(seq_lens), [max(c, 1) for c in prefix], **_kw(dtype))
        ks = torch.cat([f[1][:max(c, 1)] for f, c in zip(full, prefix)])
        vs = torch.cat([f[2][:max(c, 1)] for f, c in zip(full, prefix)])
        write_kv(cache, ks, vs, meta.slot_mapping)
    new = [n - c for n, c in zip(seq_lens, cached)]
    meta = build_attention_metadata(tables, cached, new, **_kw(dtype))
    q = torch.cat([f[0][c:] for f, c in zip(full, cached)])
    k = torch.cat([f[1][c:] for f, c in zip(full, cached)])
    v = torch.cat([f[2][c:] for f, c in zip(full, cached)])
    write_kv(cache, k, v, meta.slot_mapping)
    expected = torch.cat([dense_attention(0, f[0].float(), f[1].float(), f[2].float())[c:]
                          for f, c in zip(full, cached)])
    return q, cache, meta, expected


CASES = {
    "prefill_one": ([11], [0]),
    "prefill_varied": ([3, 17, 1, 9], [0, 0, 0, 0]),
    "decode_few": ([5, 12, 1], [4, 11, 0]),
    "decode_batched": ([5, 12, 30, 1, 9, 17], [4, 11, 29, 0, 8, 16]),
    "chunked_prefill": ([13, 22], [8, 5]),
    "mixed_lengths": ([2, 40, 7], [0, 16, 3]),
}


@pytest.mark.parametrize("impl", [paged_attention, paged_attention_reference], ids=["fast", "reference"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_paged_equals_dense(impl, case) -> None:
    seq_lens, cached = case
    q, cache, meta, expected = _setup(seq_lens, cached)
    out = impl(q, cache, meta)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_fast_path_bf16_close_to_dense() -> None:
    q, cache, meta, expected = _setup([9, 20, 3], [0, 12, 2], dtype=torch.bfloat16, seed=3)
    out = paged_attention(q, cache, meta).float()
    torch.testing.assert_close(out, expected, atol=3e-2, rtol=3e-2)


def test_long_and_short_sequences_are_split_into_groups() -> None:
    # one long prompt with many short ones would pad to a huge square; grouping keeps it exact and small
    seq_lens = [1] * 12 + [150]
    q, cache, meta, expected = _setup(seq_lens, [0] * 13)
    assert len(meta.groups) > 1
    torch.testing.assert_close(paged_attention(q, cache, meta), expected, atol=1e-5, rtol=1e-5)


def test_fp8_cache_round_trips_through_bytes() -> None:
    q, cache, meta, expected = _setup([6, 9], [0, 4])
    fp8 = cache.to(torch.float8_e4m3fn)
    out_fast = paged_attention(q, fp8, meta)
    out_ref = paged_attention_reference(q, fp8, meta)
    torch.testing.assert_close(out_fast, out_ref, atol=1e-4, rtol=1e-4)
    assert (out_fast - expected).abs().max() < 0.25  # 3 mantissa bits: close, not equal


def test_decode_cases_cover_both_fast_kernels() -> None:
    few = _setup(*CASES["decode_few"])[2]
    batched = _setup(*CASES["decode_batched"])[2]
    assert [g.use_bmm for g in few.groups] == [False]
    assert [g.use_bmm for g in batched.groups] == [True]
