"""`--deterministic`: a request's greedy tokens and logprobs do not depend on what runs beside it.

The tiny random-weight model in bf16 and fp32, prompts of several lengths: each alone, then all
together (prefills chunked by a small token budget, batch sizes changing as they finish, decodes
and prefills in mixed steps, prefix-cache hits). Bit-equal logprobs, not just equal tokens.
"""
from __future__ import annotations

import pytest
import torch

from local_engine.attention import write_kv
from local_engine.config import EngineConfig
from local_engine.engine import LLMEngine
from local_engine.engine_build import build_engine
from local_engine.invariant_attention import build_row_groups, invariant_attention, key_blocks
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.sequence import SamplingParams, Sequence
from local_engine.weights import linear

TOPICS = ["the sea", "a lighthouse", "bread", "the moon", "trains", "a small dog", "winter", "coffee"]
Result = tuple[list[int], list[tuple[float, tuple[tuple[int, float], ...]]]]


def prompts(loaded: LoadedModel) -> list[list[int]]:
    shared = "You are a poet. Answer in four lines. "  # one shared prefix: prefix-cache hits when together
    return [loaded.tokenizer.encode(shared + f"Write a short poem about {t}. " * (1 + i % 5))
            for i, t in enumerate(TOPICS)]


def run(engine: LLMEngine, token_lists: list[list[int]], max_tokens: int = 16) -> list[Result]:
    seqs = [Sequence(p, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, logprobs=3))
            for p in token_lists]
    for seq in seqs:
        engine.add_request(seq)
    logprobs: dict[int, list[tuple[float, tuple[tuple[int, float], ...]]]] = {s.seq_id: [] for s in seqs}
    while engine.has_unfinished():
        for out in engine.step():
            logprobs[out.seq_id].append((out.logprobs.logprob, out.logprobs.top))
    return [(s.completion_token_ids, logprobs[s.seq_id]) for s in seqs]


def alone_and_together(dtype: str, deterministic: bool) -> tuple[list[Result], list[Result], list[Result]]:
    """Each prompt alone (no cache hits but its own); then all at once in a fresh engine (the shared
    prefix computed once, chunked prefills, mixed steps); then all at once again (whole-prompt hits)."""
    loaded = load_engine_model("tiny-random", dtype=dtype, kv_cache_bytes=8 << 20, deterministic=deterministic)
    config = EngineConfig(model="tiny-random", max_num_seqs=8, max_num_batched_tokens=40,
                          deterministic=deterministic)
    token_lists = prompts(loaded)
    alone = [run(build_engine(config, loaded), [p])[0] for p in token_lists]
    engine = build_engine(config, loaded)
    return alone, run(engine, token_lists), run(engine, token_lists)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_deterministic_outputs_do_not_depend_on_the_batch(dtype: str) -> None:
    alone, together, cached = alone_and_together(dtype, deterministic=True)
    assert [a[0] for a in alone] == [t[0] for t in together] == [c[0] for c in cached]
    assert alone == together == cached  # logprobs bit for bit, top candidates included


def test_the_workload_tells_batch_dependent_kernels_apart() -> None:
    """The control: without --deterministic the same workload's logprobs move with the batch, so the
    check above is one that batch-dependent kernels fail."""
    alone, together, _ = alone_and_together("bf16", deterministic=False)
    assert alone != together


def test_a_tiled_matmul_row_does_not_depend_on_the_other_rows() -> None:
    torch.manual_seed(0)
    weight = torch.randn(96, 1536) / 40
    x = torch.randn(37, 1536)
    one_by_one = torch.cat([linear(x[i:i + 1], weight, tile_rows=8) for i in range(37)])
    assert torch.equal(linear(x, weight, tile_rows=8), one_by_one)
    assert torch.equal(linear(x[5:29], weight, tile_rows=8), one_by_one[5:29])


def test_key_length_depends_on_the_position_only_and_covers_it() -> None:
    for p in range(0, 5000, 7):
        nb = key_blocks(p, 16)
        assert nb * 16 > p and nb <= (p // 16 + 1) * 1.25 + 1
    assert key_blocks(0, 16, min_blocks=2) == 2


def test_invariant_attention_rows_match_alone_and_together() -> None:
    """Decode rows of sequences of different lengths: each one alone equals it in a batch of all."""
    torch.manual_seed(1)
    kvh, heads, d, bs = 2, 4, 16, 16
    cache = torch.zeros(2 * kvh, 32, bs, d, dtype=torch.bfloat16)
    lengths, tables = [5, 40, 17, 100], [[1], [2, 3, 4], [5, 6], [7, 8, 9, 10, 11, 12, 13]]
    for table, n in zip(tables, lengths):
        slots = torch.tensor([table[p // bs] * bs + p % bs for p in range(n)])
        write_kv(cache, torch.randn(n, kvh, d), torch.randn(n, kvh, d), slots)
    q = torch.randn(len(lengths), heads, d, dtype=torch.bfloat16)

    def attend(idx: list[int]) -> torch.Tensor:
        groups = build_row_groups([tables[i] for i in idx], [lengths[i] - 1 for i in idx], [1] * len(idx),
                                  block_size=bs, num_heads=heads, num_kv_heads=kvh, head_dim=d,
                                  dtype=torch.bfloat16, device=torch.device("cpu"))
        return invariant_attention(q[idx], cache, groups)

    together = attend([0, 1, 2, 3])
    for i in range(4):
        assert torch.equal(attend([i])[0], together[i])
