"""Attention over the paged KV cache: a plain reference path and a fast batched path.

A layer's cache is one tensor (2 * KVH, num_blocks, block_size, D): K heads then V heads, so a
single index_copy_ writes both and a single index_select gathers both. The fast path gathers
a group of sequences' blocks into a padded (KVH, B, L, D) tensor; the G query heads of a KV
head become extra query rows (GQA without repeating K/V). Prefill groups use one SDPA call;
batched decode uses baddbmm + softmax + bmm, measured 3x faster than SDPA's CPU kernel for
single-row queries (B=64, L=176, bf16: 0.33 vs 1.16 ms per layer). Sequences are grouped so
that padding never costs much more than the real work. A scaled FP8 cache takes its layer's
scales (2*KVH,): K/V are divided by them on write and multiplied back on read (kv_quant.py).
Prefill chunks of a bf16 cache take the native chunk kernel (blocks read in place) when the caller passes
the kernels, from 256 keys (HYBRIDGW_CHUNK_ATTENTION=auto; =native always, =sdpa never: the A/B).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from local_engine.decode_mirror import MirrorPlan
from local_engine.kv_quant import dequantize, quantize
from local_engine.native.kernels import NativeKernels, chunk_attention_setting

_MAX_PADDING_RATIO = 2.0  # a group's padded (queries x keys) may be this many times its real work
_PADDING_SLACK = 16384  # ... plus this many query-key pairs, so small batches stay one group
_BMM_MIN_SEQS = 4  # decode groups at least this big use the bmm path (SDPA wins for a few rows)
# "auto" (HYBRIDGW_CHUNK_ATTENTION, kernels.chunk_attention_setting) takes the native kernel from this many keys:
# 64-token chunks, 1 thread, 0.49x SDPA's time at 3.7k keys, 0.71x at 512, even at 256, 1.8x at 64 (its
# per-call setup; docs/benchmarks.md)
_NATIVE_CHUNK_MIN_KEYS = 256


@dataclass(frozen=True)
class AttentionGroup:
    """Consecutive sequences that share one padded SDPA call."""

    token_start: int  # first packed token row of the group
    num_tokens: int  # packed rows in the group
    num_seqs: int
    max_query_len: int  # Tq
    context_len: int  # L = NB * block_size, the padded key length
    gather_blocks: torch.Tensor  # (B * NB,) int64: the block tables, padded with block 0, flattened
    # additive mask in the model dtype: (KVH * B, 1, L) for the bmm decode path, else (1, B, Tq * G, L)
    attn_bias: torch.Tensor
    use_bmm: bool  # single-token queries of enough sequences: baddbmm path instead of SDPA
    pad_index: torch.Tensor | None  # (num_tokens,) row of each packed token in the (B * Tq) layout
    # (B,) int32 each chunk's first position and length: set where the native chunk kernel may take the group
    seq_starts: torch.Tensor | None = None
    seq_lens: torch.Tensor | None = None


@dataclass(frozen=True)
class AttentionMetadata:
    """Per-step tensors shared by every layer; built once by ``build_attention_metadata``."""

    slot_mapping: torch.Tensor  # (T,) int64: flat cache slot of each new token
    block_tables: tuple[tuple[int, ...], ...]  # per sequence (reference path)
    start_positions: tuple[int, ...]  # position of each sequence's first new token
    query_lens: tuple[int, ...]  # new tokens per sequence; sum == T
    groups: tuple[AttentionGroup, ...]  # fast path


def build_attention_metadata(block_tables: list[list[int]], start_positions: list[int], query_lens: list[int],
                             *, block_size: int, num_heads: int, num_kv_heads: int, dtype: torch.dtype,
                             device: torch.device, split_at: int = 0) -> AttentionMetadata:
    """Plain lists from the scheduler -> the tensors every layer's attention needs.

    ``split_at``: a group starts at this sequence (a mixed step's first prefill), so the decodes'
    groups hold only decodes (the mirror and the native kernel take them; groups_from picks the rest).
    """
    slots = [table[p // block_size] * block_size + p % block_size
             for table, s, n in zip(block_tables, start_positions, query_lens) for p in range(s, s + n)]
    # only the blocks holding the context are read; a table may hold more (allocated ahead)
    block_tables = [t[:-(-(s + n) // block_size)] for t, s, n in zip(block_tables, start_positions, query_lens)]
    groups, token_start = [], 0
    native = chunk_attention_setting() if dtype == torch.bfloat16 and device.type == "cpu" else "sdpa"
    for lo, hi in _group_ranges(start_positions, query_lens, split_at):
        group = _build_group(block_tables[lo:hi], start_positions[lo:hi], query_lens[lo:hi], token_start,
                             block_size, num_heads, num_kv_heads, dtype, device, native)
        groups.append(group)
        token_start += group.num_tokens
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64).to(device),
        block_tables=tuple(tuple(t) for t in block_tables), start_positions=tuple(start_positions),
        query_lens=tuple(query_lens), groups=tuple(groups))


def _group_ranges(starts: list[int], query_lens: list[int], split_at: int = 0) -> list[tuple[int, int]]:
    """Split sequences (in order) into [lo, hi) runs whose padding stays within budget (and at split_at)."""
    ranges, lo, max_q, max_ctx, work = [], 0, 0, 0, 0
    for i, (s, n) in enumerate(zip(starts, query_lens)):
        q, ctx = max(max_q, n), max(max_ctx, s + n)
        if i > lo and (i == split_at or (i + 1 - lo) * q * ctx > _MAX_PADDING_RATIO * (work + n * (s + n))
                       + _PADDING_SLACK):
            ranges.append((lo, i))
            lo, q, ctx, work = i, n, s + n, 0
        max_q, max_ctx, work = q, ctx, work + n * (s + n)
    ranges.append((lo, len(query_lens)))
    return ranges


def _build_group(tables: list[list[int]], starts: list[int], query_lens: list[int], token_start: int,
                 block_size: int, num_heads: int, num_kv_heads: int, dtype: torch.dtype,
                 device: torch.device, native: str = "sdpa") -> AttentionGroup:
    max_q = max(query_lens)
    num_blocks = max(len(t) for t in tables)
    padded = torch.tensor([t + [0] * (num_blocks - len(t)) for t in tables], dtype=torch.int64)
    # key j is visible to query row t of sequence b when j <= min(start_b + t, context_b - 1); padded
    # query rows (t >= n_b) thus see the whole context instead of nothing, which would give NaNs.
    s, n = torch.tensor(starts), torch.tensor(query_lens)
    limit = torch.minimum(s[:, None] + torch.arange(max_q)[None, :], (s + n - 1)[:, None])  # (B, Tq)
    visible = torch.arange(num_blocks * block_size)[None, None, :] <= limit[:, :, None]  # (B, Tq, L)
    bias = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))
    use_bmm = max_q == 1 and len(query_lens) >= _BMM_MIN_SEQS
    if use_bmm:
        bias = bias.view(1, len(query_lens), 1, -1).expand(num_kv_heads, -1, -1, -1).reshape(-1, 1, bias.shape[-1])
    else:
        bias = bias.repeat_interleave(num_heads // num_kv_heads, dim=1)[None]  # (1, B, Tq * G, L)
    pad_index = None
    if max_q > 1:
        pad_index = torch.tensor([b * max_q + t for b, m in enumerate(query_lens) for t in range(m)]).to(device)
    return AttentionGroup(token_start=token_start, num_tokens=sum(query_lens), num_seqs=len(query_lens),
                          max_query_len=max_q, context_len=num_blocks * block_size,
                          gather_blocks=padded.view(-1).to(device), attn_bias=bias.to(device), use_bmm=use_bmm,
                          pad_index=pad_index, **_chunk_fields(max_q > 1 and (native == "native" or (
                              native == "auto" and num_blocks * block_size >= _NATIVE_CHUNK_MIN_KEYS)),
                              starts, query_lens))


def _chunk_fields(native: bool, starts: list[int], query_lens: list[int]) -> dict[str, torch.Tensor]:
    if not native:
        return {}
    return {"seq_starts": torch.tensor(starts, dtype=torch.int32),
            "seq_lens": torch.tensor(query_lens, dtype=torch.int32)}


def storage_view(cache: torch.Tensor) -> torch.Tensor:
    # index kernels lack float8 on CPU; moving the same bytes as uint8 is exact
    return cache.view(torch.uint8) if cache.element_size() == 1 and cache.is_floating_point() else cache


def write_kv(cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
             scales: torch.Tensor | None = None) -> torch.Tensor:
    """Store k, v (T, KVH, D) at flat slots (T,) of a layer cache (2*KVH, N, block_size, D).

    Returns what was stored, (2*KVH, T, D) in the cache dtype (the decode mirror appends it too).
    """
    two_kvh, n, bs, d = cache.shape
    kv = torch.cat([k, v], dim=1).transpose(0, 1)  # (2*KVH, T, D)
    kv = quantize(kv, scales) if scales is not None else kv.to(cache.dtype)
    storage_view(cache).view(two_kvh, n * bs, d).index_copy_(1, slot_mapping, storage_view(kv))
    return kv


def groups_from(meta: AttentionMetadata, token: int) -> tuple[AttentionGroup, ...]:
    """The groups whose rows start at or after packed row ``token`` (a mixed step's prefill groups)."""
    return tuple(g for g in meta.groups if g.token_start >= token)


def paged_attention(q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata,
                    scales: torch.Tensor | None = None,
                    groups: tuple[AttentionGroup, ...] | None = None,
                    kernels: NativeKernels | None = None) -> torch.Tensor:
    """Fast path. q (T, H, D) -> (T, H, D), reading K/V of all sequences through their block tables;
    with ``groups`` (a subset of meta's, consecutive) only their rows, (their tokens, H, D). ``kernels``:
    prefill groups of a bf16 cache through the native chunk kernel where it applies."""
    groups = meta.groups if groups is None else groups
    if len(groups) == 1 and groups[0].num_tokens == q.shape[0]:
        return _group_attention(q, cache, groups[0], scales, kernels)
    return torch.cat([_group_attention(q[g.token_start:g.token_start + g.num_tokens], cache, g, scales, kernels)
                      for g in groups])


def _native_chunk(kernels: NativeKernels | None, q: torch.Tensor, cache: torch.Tensor, group: AttentionGroup,
                  scales: torch.Tensor | None) -> bool:
    """Whether the native kernel takes this group: prefill rows, bf16 throughout, head dim a multiple of 32."""
    return (kernels is not None and group.seq_starts is not None and scales is None and q.dtype == torch.bfloat16
            and cache.dtype == torch.bfloat16 and q.shape[-1] % 32 == 0 and q.shape[-1] <= 256 and kernels.chunk_ok)


def _group_attention(q: torch.Tensor, cache: torch.Tensor, group: AttentionGroup,
                     scales: torch.Tensor | None, kernels: NativeKernels | None = None) -> torch.Tensor:
    if _native_chunk(kernels, q, cache, group, scales):
        assert kernels is not None and group.seq_lens is not None and group.seq_starts is not None
        return kernels.chunk_attention(q, cache, group.gather_blocks.view(group.num_seqs, -1), group.seq_starts,
                                       group.seq_lens)
    _, H, D = q.shape
    two_kvh = cache.shape[0]
    KVH, G = two_kvh // 2, H // (two_kvh // 2)
    B, Tq, L = group.num_seqs, group.max_query_len, group.context_len
    kv = storage_view(cache).index_select(1, group.gather_blocks)  # (2*KVH, B*NB, bs, D)
    if cache.dtype != q.dtype or scales is not None:
        kv = dequantize(kv, cache.dtype, q.dtype, scales)
    kv = kv.view(two_kvh, B, L, D)
    if group.use_bmm:
        return bmm_decode(q, kv, group.attn_bias)
    if B * Tq == 1:  # one decode token: the (KVH, 1, G, D) layout is a view, no permute copies
        qg = q.view(KVH, 1, G, D)
        return F.scaled_dot_product_attention(qg, kv[:KVH], kv[KVH:], attn_mask=group.attn_bias).view(1, H, D)
    if group.pad_index is not None:  # packed rows -> padded (B * Tq) rows
        q = q.new_zeros(B * Tq, H, D).index_copy_(0, group.pad_index, q)
    q = q.view(B, Tq, KVH, G, D).permute(2, 0, 1, 3, 4).reshape(KVH, B, Tq * G, D)
    out = F.scaled_dot_product_attention(q, kv[:KVH], kv[KVH:], attn_mask=group.attn_bias)  # (KVH, B, Tq*G, D)
    out = out.view(KVH, B, Tq, G, D).permute(1, 2, 0, 3, 4).reshape(B * Tq, H, D)
    return out if group.pad_index is None else out.index_select(0, group.pad_index)


def bmm_decode(q: torch.Tensor, kv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One query token per sequence. q (B, H, D), kv (2*KVH, B, L, D), bias (KVH*B, 1, L) -> (B, H, D)."""
    B, H, D = q.shape
    two_kvh, _, L, _ = kv.shape
    KVH = two_kvh // 2
    qg = q.reshape(B, KVH, H // KVH, D).transpose(0, 1).reshape(KVH * B, H // KVH, D)  # (KVH*B, G, D)
    k = kv[:KVH].reshape(KVH * B, L, D)
    v = kv[KVH:].reshape(KVH * B, L, D)
    scores = torch.baddbmm(bias, qg, k.transpose(1, 2), alpha=D ** -0.5)  # (KVH*B, G, L)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.bmm(probs, v)  # (KVH*B, G, D)
    return out.view(KVH, B, H // KVH, D).transpose(0, 1).reshape(B, H, D)


def mirrored_decode_attention(q: torch.Tensor, stored: torch.Tensor, cache: torch.Tensor,
                              mirror: torch.Tensor | None, plan: MirrorPlan,
                              scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over the mirror of the batch's K/V (see decode_mirror.py).

    q (B, H, D); ``stored`` (2*KVH, B, D): the new tokens' K/V as ``write_kv`` put them in ``cache``;
    ``mirror`` (2*KVH, B, capacity, D) from the previous step. Returns (out (B, H, D), the updated mirror).
    """
    two_kvh, D = cache.shape[0], cache.shape[-1]
    B = q.shape[0]
    if plan.rebuild or mirror is None:
        assert plan.gather_blocks is not None
        mirror = dequantize(storage_view(cache).index_select(1, plan.gather_blocks), cache.dtype, q.dtype, scales)
        mirror = mirror.view(two_kvh, B, plan.capacity, D)
    else:
        # the values the pool holds (rounded to its dtype), so both paths agree exactly
        mirror.view(two_kvh, B * plan.capacity, D).index_copy_(
            1, plan.slots, dequantize(stored, cache.dtype, q.dtype, scales))
    return bmm_decode(q, mirror, plan.attn_bias), mirror


def paged_attention_reference(q: torch.Tensor, cache: torch.Tensor, meta: AttentionMetadata,
                              scales: torch.Tensor | None = None) -> torch.Tensor:
    """Reference path: one sequence at a time, slots computed per position, float32 math."""
    _, H, D = q.shape
    two_kvh, n, bs, _ = cache.shape
    KVH = two_kvh // 2
    flat = storage_view(cache).view(two_kvh, n * bs, D)
    outputs, offset = [], 0
    for table, start, num in zip(meta.block_tables, meta.start_positions, meta.query_lens):
        positions = torch.arange(start + num)
        slots = torch.tensor([table[p // bs] * bs + p % bs for p in positions.tolist()], device=q.device)
        kv = dequantize(flat.index_select(1, slots), cache.dtype, torch.float32, scales)  # (2*KVH, L, D)
        k = kv[:KVH].repeat_interleave(H // KVH, dim=0)  # (H, L, D)
        v = kv[KVH:].repeat_interleave(H // KVH, dim=0)
        qs = q[offset:offset + num].float().transpose(0, 1)  # (H, n, D)
        scores = qs @ k.transpose(1, 2) / D ** 0.5  # (H, n, L)
        causal = positions[None, :] <= positions[start:, None]  # (n, L)
        scores = scores.masked_fill(~causal.to(q.device), float("-inf"))
        outputs.append((scores.softmax(-1) @ v).transpose(0, 1))  # (n, H, D)
        offset += num
    return torch.cat(outputs).to(q.dtype)
