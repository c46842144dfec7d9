"""Decode attention of a small step through the native kernel: each sequence's one new token stored in
the paged bf16 cache and attended over its blocks in place (no gather into a padded copy).

A thin hook for the runner: ``native_decode_attention`` returns the step's attention callable, or
None where the torch paths apply (other dtypes, prompts, larger batches, no kernels).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from local_engine.native.kernels import NativeKernels

MAX_SEQS = 3  # from 4 sequences the runner's bmm path with its decode mirror takes over
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def native_decode_attention(kernels: NativeKernels | None, cache: torch.Tensor, num_heads: int,
                            block_tables: Sequence[Sequence[int]], start_positions: Sequence[int],
                            query_lens: Sequence[int]) -> Attend | None:
    """cache: every layer's pool (layers, 2*KVH, N, block_size, D); the rest as AttentionMetadata has it."""
    group = num_heads // (cache.shape[1] // 2)  # query heads per KV head: the kernel holds up to 8
    if (kernels is None or cache.dtype != torch.bfloat16 or cache.device.type != "cpu" or cache.shape[-1] % 16
            or group > 8 or not 0 < len(query_lens) <= MAX_SEQS or any(n != 1 for n in query_lens)):
        return None
    width = max(len(t) for t in block_tables)
    tables = torch.tensor([list(t) + [0] * (width - len(t)) for t in block_tables], dtype=torch.int64)
    context_lens = torch.tensor([s + 1 for s in start_positions], dtype=torch.int32)

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not (q.stride(0) == k.stride(0) == v.stride(0) and q.stride(1) == k.stride(1) == v.stride(1) == q.shape[2]
                and q.stride(2) == 1 and q.dtype == torch.bfloat16):
            raise ValueError("native decode attention needs q, k, v as rows of one bf16 qkv tensor")
        return kernels.paged_decode_(q, k, v, cache[layer], tables, context_lens)
    return attend
