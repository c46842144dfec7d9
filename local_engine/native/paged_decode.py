"""Decode attention of a small step through the native kernel: each sequence's one new token stored in
the paged bf16 cache and attended over its blocks in place (no gather into a padded copy).

A thin hook for the runner: ``native_decode_attention`` returns the step's attention callable, or
None where the torch paths apply (other dtypes, prompts, larger batches, no kernels).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from local_engine.native.kernels import NativeKernels

# Decode rows of any count take the kernel (blocks read in place): at 16-64 sequences the bmm path over a
# gathered, padded copy (and its decode mirror) cost ~35% of a decode step (docs/benchmarks.md, #14 64 streams).
# The runner's ``native_decode_max_seqs`` caps it for A/B benches (3: the earlier limit).
MAX_SEQS: int | None = None


class NativeDecodeAttention:
    """The step's attention callable (layer, q, k, v) -> (B, H, D); FusedLayer also reads its fields to run
    a whole layer in one native call."""

    def __init__(self, kernels: NativeKernels, cache: torch.Tensor, tables: torch.Tensor,
                 context_lens: torch.Tensor) -> None:
        self.kernels, self.cache, self.tables, self.context_lens = kernels, cache, tables, context_lens
        self.layer_bytes = cache.stride(0) * cache.element_size()  # cache[layer] is base + layer * this

    def layer_ptr(self, layer: int) -> int:
        return self.cache.data_ptr() + layer * self.layer_bytes

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not (q.stride(0) == k.stride(0) == v.stride(0) and q.stride(1) == k.stride(1) == v.stride(1) == q.shape[2]
                and q.stride(2) == 1 and q.dtype == torch.bfloat16):
            raise ValueError("native decode attention needs q, k, v as rows of one bf16 qkv tensor")
        return self.kernels.paged_decode_(q, k, v, self.cache[layer], self.tables, self.context_lens)


def native_decode_attention(kernels: NativeKernels | None, cache: torch.Tensor, num_heads: int,
                            block_tables: Sequence[Sequence[int]], start_positions: Sequence[int],
                            query_lens: Sequence[int], max_seqs: int | None = MAX_SEQS) -> NativeDecodeAttention | None:
    """cache: every layer's pool (layers, 2*KVH, N, block_size, D); the rest as AttentionMetadata has it;
    None also for more than ``max_seqs`` sequences (None: any number)."""
    group = num_heads // (cache.shape[1] // 2)  # query heads per KV head: the kernel holds up to 8
    if (kernels is None or cache.dtype != torch.bfloat16 or cache.device.type != "cpu" or cache.shape[-1] % 16
            or group > 8 or not query_lens or (max_seqs is not None and len(query_lens) > max_seqs)
            or any(n != 1 for n in query_lens)):
        return None
    width = max(len(t) for t in block_tables)
    tables = torch.tensor([list(t) + [0] * (width - len(t)) for t in block_tables], dtype=torch.int64)
    context_lens = torch.tensor([s + 1 for s in start_positions], dtype=torch.int32)
    return NativeDecodeAttention(kernels, cache, tables, context_lens)
