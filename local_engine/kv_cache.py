"""The paged KV pool: every layer's K/V blocks, allocated once from a memory budget.

Layout per layer: (2 * KVH, num_blocks, block_size, D) — K heads then V heads — so one
index op moves both (see attention.py). Block ids are handed out by the block manager.
An FP8 pool stores K/V divided by one power-of-two scale per layer and head (kv_quant.py).
"""
from __future__ import annotations

import torch

from local_engine.kv_quant import is_fp8
from local_engine.model_config import ModelConfig

KV_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
    "fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn,
}


class KVCacheError(ValueError):
    """The budget does not hold even one block, or the dtype is unknown."""


def resolve_kv_dtype(kv_dtype: str | torch.dtype | None, model_dtype: torch.dtype) -> torch.dtype:
    if kv_dtype is None or kv_dtype == "auto":
        return model_dtype
    if isinstance(kv_dtype, torch.dtype):
        return kv_dtype
    if kv_dtype not in KV_DTYPES:
        raise KVCacheError(f"unknown KV dtype {kv_dtype!r}; use one of {sorted(KV_DTYPES)}")
    return KV_DTYPES[kv_dtype]


def bytes_per_block(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    return config.kv_bytes_per_token(dtype) * block_size


def num_blocks_for_budget(config: ModelConfig, budget_bytes: int, block_size: int, dtype: torch.dtype) -> int:
    num = int(budget_bytes) // bytes_per_block(config, block_size, dtype)
    if num < 1:
        raise KVCacheError(f"a KV budget of {budget_bytes} bytes holds no block of "
                           f"{bytes_per_block(config, block_size, dtype)} bytes")
    return num


def cuda_kv_budget(device: torch.device, memory_fraction: float, reserve_bytes: int = 0) -> int:
    """Bytes for the pool on a GPU: ``memory_fraction`` of what is free now (weights already loaded),
    less ``reserve_bytes`` kept for activations."""
    free, _total = torch.cuda.mem_get_info(device)
    return max(0, int(free * memory_fraction) - reserve_bytes)


class PagedKVCache:
    """All layers' blocks as one tensor (layers, 2 * KVH, num_blocks + scratch_blocks, block_size, D).

    ``scratch_blocks`` extra blocks (ids from ``num_blocks`` on) are never handed out: padded rows of
    a CUDA graph's batch write there. ``scales`` (layers, 2 * KVH) float32 for a scaled FP8 pool
    (all 1 until calibrated, which is the plain cast), else None.
    """

    def __init__(self, config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
                 device: torch.device | str, *, scaled: bool = True, scratch_blocks: int = 0) -> None:
        if num_blocks < 1 or block_size < 1:
            raise KVCacheError(f"need at least one block of at least one token (got {num_blocks} x {block_size})")
        self.num_blocks, self.block_size, self.dtype = num_blocks, block_size, dtype
        self.kv_bytes_per_token = config.kv_bytes_per_token(dtype)
        shape = (config.num_layers, 2 * config.num_kv_heads, num_blocks + scratch_blocks, block_size, config.head_dim)
        self.tensor = torch.zeros(shape, dtype=dtype, device=device)
        self.scales: torch.Tensor | None = None
        if scaled and is_fp8(dtype):
            self.scales = torch.ones(config.num_layers, 2 * config.num_kv_heads, dtype=torch.float32, device=device)

    def layer(self, index: int) -> torch.Tensor:
        """(2 * KVH, num_blocks, block_size, D) view for one layer."""
        return self.tensor[index]

    def layer_scales(self, index: int) -> torch.Tensor | None:
        """(2 * KVH,) float32 scales of one layer, or None (an unscaled pool)."""
        return None if self.scales is None else self.scales[index]

    def set_scales(self, scales: torch.Tensor) -> None:
        """Install calibrated scales (layers, 2 * KVH); only before anything is stored with the old ones."""
        if self.scales is None:
            raise KVCacheError(f"a {self.dtype} pool without scales takes none")
        if scales.shape != self.scales.shape:
            raise KVCacheError(f"scales of shape {tuple(scales.shape)}, expected {tuple(self.scales.shape)}")
        self.scales.copy_(scales)

    @property
    def num_bytes(self) -> int:
        return self.tensor.numel() * self.tensor.element_size()
