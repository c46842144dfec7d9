"""Batch-invariant attention for ``--deterministic``: every query token is computed the same way
whatever else is in the step, and whether it is prefilled, decoded or recomputed.

Each query token is its own bmm item — its G query heads per KV head against its own sequence's
keys — over a key length that depends only on its position (its blocks, rounded up to a coarse
bucket so that a step needs few calls), the rest masked. No call's shape depends on the batch's
size, the other sequences' lengths or how the scheduler chunked the prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from local_engine.attention import bmm_decode, storage_view
from local_engine.kv_quant import dequantize

_MAX_GATHERED = 1 << 16  # query tokens x key positions gathered per call (bounds the K/V copies)
# torch sends a bf16 bmm to oneDNN only when batch x M x K x N exceeds 16**3, so a small batch of
# small items would take another kernel than a big one; items above it on their own never switch.
_MKLDNN_MIN_WORK = 16 ** 3


@dataclass(frozen=True)
class RowGroup:
    """Query tokens whose key length bucket is the same: one gather and one bmm call (or a few)."""

    rows: torch.Tensor  # (R,) int64: the tokens' rows in the step's packed (T, ...) layout
    gather_blocks: torch.Tensor  # (R * NB,) int64: each token's own blocks, padded with block 0
    attn_bias: torch.Tensor  # (KVH * R, 1, L) in the model dtype: 0 up to the token's position, else -inf
    context_len: int  # L = NB * block_size


def key_blocks(position: int, block_size: int, min_blocks: int = 1) -> int:
    """Blocks a token at ``position`` attends over: its own (at least ``min_blocks``), rounded up to
    1/4–1/8 of an octave.

    A function of the position alone; the rounding keeps the distinct lengths in a step few
    (at most a quarter of extra keys, all masked).
    """
    needed = max(min_blocks, position // block_size + 1)
    step = max(1, 1 << max(0, needed.bit_length() - 3))
    return -(-needed // step) * step


def build_row_groups(block_tables: list[list[int]], start_positions: list[int], query_lens: list[int], *,
                     block_size: int, num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                     device: torch.device) -> tuple[RowGroup, ...]:
    """Plain lists from the scheduler -> the per-bucket gathers and masks every layer reuses."""
    min_keys = _MKLDNN_MIN_WORK // (num_heads // num_kv_heads * head_dim) + 1  # one item alone is above it
    min_blocks = -(-min_keys // block_size)
    by_len: dict[int, list[tuple[int, list[int], int]]] = {}
    row = 0
    for table, start, n in zip(block_tables, start_positions, query_lens):
        for p in range(start, start + n):
            nb = key_blocks(p, block_size, min_blocks)
            by_len.setdefault(nb, []).append((row, table[:p // block_size + 1], p))
            row += 1
    groups = []
    for nb, entries in sorted(by_len.items()):
        L = nb * block_size
        per_call = max(1, _MAX_GATHERED // L)
        for lo in range(0, len(entries), per_call):
            groups.append(_group(entries[lo:lo + per_call], nb, block_size, num_kv_heads, dtype, device))
    return tuple(groups)


def _group(entries: list[tuple[int, list[int], int]], nb: int, block_size: int, num_kv_heads: int,
           dtype: torch.dtype, device: torch.device) -> RowGroup:
    L = nb * block_size
    blocks = [b for _, own, _ in entries for b in own + [0] * (nb - len(own))]
    positions = torch.tensor([p for _, _, p in entries])
    visible = torch.arange(L)[None, :] <= positions[:, None]  # (R, L)
    bias = torch.zeros(visible.shape, dtype=dtype).masked_fill_(~visible, float("-inf"))
    bias = bias[None].expand(num_kv_heads, -1, -1).reshape(-1, 1, L)  # (KVH * R, 1, L)
    return RowGroup(rows=torch.tensor([r for r, _, _ in entries], dtype=torch.int64).to(device),
                    gather_blocks=torch.tensor(blocks, dtype=torch.int64).to(device),
                    attn_bias=bias.to(device), context_len=L)


def invariant_attention(q: torch.Tensor, cache: torch.Tensor, groups: tuple[RowGroup, ...],
                        scales: torch.Tensor | None = None) -> torch.Tensor:
    """q (T, H, D) -> (T, H, D) over a layer cache (2*KVH, N, block_size, D), one bmm item per token;
    ``scales`` (2*KVH,) of a scaled FP8 cache."""
    two_kvh, D = cache.shape[0], cache.shape[-1]
    out = torch.empty_like(q)
    for g in groups:
        R = g.rows.shape[0]
        kv = dequantize(storage_view(cache).index_select(1, g.gather_blocks), cache.dtype, q.dtype, scales)
        kv = kv.view(two_kvh, R, g.context_len, D)  # (2*KVH, R, L, D)
        out.index_copy_(0, g.rows, bmm_decode(q.index_select(0, g.rows), kv, g.attn_bias))
    return out
