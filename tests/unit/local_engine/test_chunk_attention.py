"""The native chunk-attention kernel (chunk_attention.h) against SDPA and the float32 reference: causal prefill
chunks over shuffled paged blocks, GQA, several sequences per group, and the HYBRIDGW_CHUNK_ATTENTION switch."""
from __future__ import annotations

import pytest
import torch

from local_engine.attention import build_attention_metadata, paged_attention, paged_attention_reference
from local_engine.batch import ScheduledBatch
from local_engine.native.kernels import load_kernels
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence

from .helpers import BlockPool, make_runner, tiny_config, tiny_model
from .native_support import codes, native_kernels
from .test_native_model import MATRICES

# bf16 inputs: outputs are averages of V ~ N(0, 1); P rounded to bf16 (as torch's CPU flash attention does)
ATOL, RTOL = 2e-2, 2e-2


def setup(kvh: int, g: int, d: int, bs: int, seqs: list[tuple[int, int]], seed: int = 0):  # type: ignore[no-untyped-def]
    """A bf16 cache of shuffled blocks, each sequence's table drawn from them, and q as rows of a wider qkv."""
    gen = torch.Generator().manual_seed(seed)
    need = [-(-(s + n) // bs) for s, n in seqs]
    pool = sum(need) + 5
    cache = torch.randn(2 * kvh, pool, bs, d, generator=gen).to(torch.bfloat16)
    order = torch.randperm(pool, generator=gen).tolist()
    tables, at = [], 0
    for n in need:
        tables.append(order[at:at + n])
        at += n
    tokens, h = sum(n for _, n in seqs), kvh * g
    qkv = torch.randn(tokens, (h + 2 * kvh) * d, generator=gen).to(torch.bfloat16)
    q = qkv[:, :h * d].view(tokens, h, d)  # strided rows, as the model's q
    meta = build_attention_metadata(tables, [s for s, _ in seqs], [n for _, n in seqs], block_size=bs,
                                    num_heads=h, num_kv_heads=kvh, dtype=torch.bfloat16, device=torch.device("cpu"))
    return q, cache, meta


SHAPES = [  # (KV heads, query heads per KV head, head dim, block size, [(start, chunk length)])
    (3, 3, 64, 16, [(0, 64)]),  # SmolLM2-135M's first chunk
    (3, 3, 64, 16, [(1000, 64)]),  # a later chunk: prefix + the chunk itself
    (3, 3, 64, 16, [(37, 29), (500, 64)]),  # two sequences in one group, unaligned starts
    (3, 3, 64, 16, [(12, 1), (70, 40), (3, 1)]),  # single-token rows beside a chunk
    (2, 4, 32, 16, [(5, 17)]),
    (1, 8, 128, 32, [(100, 33)]),
    (4, 1, 96, 16, [(31, 47)]),  # no GQA, head dim of 3 x 32
]


@pytest.mark.parametrize("kvh,g,d,bs,seqs", SHAPES)
def test_matches_sdpa_and_reference(kvh: int, g: int, d: int, bs: int, seqs: list[tuple[int, int]],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = native_kernels()
    if not kernels.chunk_ok:
        pytest.skip("the chunk kernel needs AVX512-BF16")
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "native")
    q, cache, meta = setup(kvh, g, d, bs, seqs)
    assert all(grp.seq_starts is not None for grp in meta.groups)
    native = paged_attention(q, cache, meta, kernels=kernels)
    sdpa = paged_attention(q, cache, meta)  # no kernels: SDPA
    reference = paged_attention_reference(q, cache, meta).float()
    assert native.dtype == torch.bfloat16 and native.shape == q.shape
    torch.testing.assert_close(native.float(), sdpa.float(), atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(native.float(), reference, atol=ATOL, rtol=RTOL)
    # not looser than SDPA's own bf16 error against the float32 reference, beyond a rounding step
    assert (native.float() - reference).abs().max() <= (sdpa.float() - reference).abs().max() + 8e-3


def test_causal_mask_hides_later_keys() -> None:
    """Changing the chunk's last token's K/V changes only that token's row."""
    kernels = native_kernels()
    if not kernels.chunk_ok:
        pytest.skip("the chunk kernel needs AVX512-BF16")
    q, cache, meta = setup(3, 3, 64, 16, [(240, 50)])
    group = meta.groups[0]
    before = paged_attention(q, cache, meta, kernels=kernels)
    last = 240 + 50 - 1
    slot = meta.block_tables[0][last // 16], last % 16
    cache[:, slot[0], slot[1]] += 3.0
    after = paged_attention(q, cache, meta, kernels=kernels)
    assert torch.equal(before[:-1], after[:-1])
    assert not torch.equal(before[-1], after[-1])
    assert group.seq_lens is not None and group.seq_lens.tolist() == [50]


def test_setting_sdpa_keeps_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = native_kernels()
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "sdpa")
    q, cache, meta = setup(3, 3, 64, 16, [(200, 64)])
    assert meta.groups[0].seq_starts is None
    assert torch.equal(paged_attention(q, cache, meta, kernels=kernels), paged_attention(q, cache, meta))
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "flash")
    with pytest.raises(ValueError, match="HYBRIDGW_CHUNK_ATTENTION"):
        setup(3, 3, 64, 16, [(0, 8)])
    with pytest.raises(ValueError, match="HYBRIDGW_CHUNK_ATTENTION"):  # at load, before the first prompt
        load_kernels()


def test_auto_takes_the_kernel_from_256_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDGW_CHUNK_ATTENTION", raising=False)
    assert setup(3, 3, 64, 16, [(0, 64)])[2].groups[0].seq_starts is None  # 64 keys: SDPA is faster
    assert setup(3, 3, 64, 16, [(192, 64)])[2].groups[0].seq_starts is not None
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "native")
    assert setup(3, 3, 64, 16, [(0, 64)])[2].groups[0].seq_starts is not None


def test_decode_groups_and_fp32_stay_off_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Single-token groups (decodes) and a non-bf16 dtype never get the chunk fields."""
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "native")
    q, cache, meta = setup(3, 3, 64, 16, [(100, 1), (50, 1)])
    assert all(grp.seq_starts is None for grp in meta.groups)
    meta32 = build_attention_metadata([[0, 1]], [0], [20], block_size=16, num_heads=9, num_kv_heads=3,
                                      dtype=torch.float32, device=torch.device("cpu"))
    assert meta32.groups[0].seq_starts is None


def prefill_logprobs(runner: ModelRunner, prompt: list[int], chunk: int) -> list[dict[int, float]]:
    """Top-3 logprobs after each chunk of the prompt (the chunks' attention at growing contexts)."""
    pool, seq = BlockPool(runner.num_blocks), Sequence(list(prompt), SamplingParams(temperature=0.0, logprobs=3))
    tops = []
    while seq.num_cached_tokens < len(prompt):
        n = min(chunk, len(prompt) - seq.num_cached_tokens)
        pool.fill(seq, runner.block_size, seq.num_cached_tokens + n)
        out = runner.run(ScheduledBatch((seq,), (n,), num_decodes=0))
        seq.num_cached_tokens += n
        if out.logprobs[0] is not None:
            tops.append(dict(out.logprobs[0].top))
    return tops


def test_runner_prefill_takes_the_kernel_and_agrees_with_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    """A coded bf16 model (head dim 32) through the runner: a 600-token prompt in 100-token chunks gives
    the same top tokens as with SDPA, logprobs within bf16 noise, and not bit-equal (the kernel ran)."""
    native_kernels()
    model = tiny_model(tiny_config(head_dim=32), dtype=torch.bfloat16)
    for layer in model.decoder_layers:
        for i, name in enumerate(MATRICES):
            n, k = getattr(layer, name).weight.shape
            layer.int4_codes[name] = codes(n, k, seed=10 * layer.layer_idx + i, step=0.07)
    runner = make_runner(model, num_blocks=200, block_size=4)
    if runner.model.native is None or not runner.model.native.chunk_ok:
        pytest.skip("the chunk kernel needs AVX512-BF16")
    prompt = [(i * 37) % 400 + 3 for i in range(600)]
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "sdpa")
    sdpa = prefill_logprobs(runner, prompt, 100)
    monkeypatch.setenv("HYBRIDGW_CHUNK_ATTENTION", "auto")  # from 256 keys: chunks 3-6
    native = prefill_logprobs(runner, prompt, 100)
    assert len(sdpa) == len(native) >= 1
    for a, b in zip(sdpa, native):
        best = max(a, key=a.__getitem__)
        assert best in b and abs(a[best] - b[best]) < 0.05, (a, b)
    assert sdpa != native
