"""One decoder layer of a small step (a few rows) through the native kernels: five calls around the
attention — RMSNorm+qkv, RoPE, o+residual, RMSNorm+gate/up, SiLU·mul+down+residual.

Same arithmetic as DecoderLayer's torch path (bf16 casts and roundings where it has them, the same
effective 4-bit weights), only fewer passes over memory and no per-op dispatch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from local_engine.native.kernels import (
    OUT_BF16,
    OUT_RESIDUAL,
    X_BF16,
    X_RMSNORM,
    X_SILU_MUL,
    NativeKernels,
    Q4Weight,
)
from local_engine.native.paged_decode import NativeDecodeAttention

# (layer index, q (T, H, D), k (T, KVH, D), v (T, KVH, D)) -> attention output (T, H, D), as model.AttentionFn
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NativeInt4:
    """A 4-bit matrix for weights.linear's few-row path: bf16 (S, K) -> bf16 (S, N) through the kernels."""

    kernels: NativeKernels
    weight: Q4Weight

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels.q4_linear(self.weight, x)


@dataclass(frozen=True)
class FusedLayer:
    kernels: NativeKernels
    qkv: Q4Weight  # (q_size + 2 kv_size, hidden)
    o: Q4Weight  # (hidden, q_size)
    gate_up: Q4Weight  # (2 I, hidden)
    down: Q4Weight  # (hidden, I)
    qkv_bias: torch.Tensor | None  # (q_size + 2 kv_size,) in the model dtype
    input_norm: torch.Tensor  # (hidden,) float32
    post_attn_norm: torch.Tensor  # (hidden,) float32
    eps: float
    num_heads: int
    num_kv_heads: int
    head_dim: int

    def forward(self, layer_idx: int, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                attend: Attend) -> torch.Tensor:
        """x (T, hidden) float32, cos / sin_signed (T, 1, D) bf16 -> the layer's output (T, hidden) float32."""
        if isinstance(attend, NativeDecodeAttention) and self.qkv_bias is None:
            return self._decode_layer(layer_idx, x.contiguous(), cos, sin_signed, attend)
        # Every tensor handed to the kernels is built here contiguous and of the right dtype (x: the
        # previous layer's float32 output), so the unchecked calls are safe; the norm weights' addresses
        # are read per call (cheap) since the model owns those tensors.
        T = x.shape[0]
        H, KVH, D = self.num_heads, self.num_kv_heads, self.head_dim
        k, eps = self.kernels, self.eps
        x = x.contiguous()
        qkv = k.q4_unchecked(self.qkv, x, X_RMSNORM, self.input_norm.data_ptr(), eps, OUT_BF16, None)  # (T, .)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias
        k.rope_(qkv, H + KVH, D, cos, sin_signed)  # q and k heads together
        qkv = qkv.view(T, H + 2 * KVH, D)
        attn = attend(layer_idx, qkv[:, :H], qkv[:, H:H + KVH], qkv[:, H + KVH:])  # (T, H, D)
        attn = attn.reshape(T, H * D).contiguous().to(torch.bfloat16)
        x = k.q4_unchecked(self.o, attn, X_BF16, None, 0.0, OUT_RESIDUAL, x)
        gate_up = k.q4_unchecked(self.gate_up, x, X_RMSNORM, self.post_attn_norm.data_ptr(), eps, OUT_BF16, None)
        return k.q4_unchecked(self.down, gate_up, X_SILU_MUL, None, 0.0, OUT_RESIDUAL, x)

    def _decode_layer(self, layer_idx: int, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                      attend: NativeDecodeAttention) -> torch.Tensor:
        """The same calls as forward's, in one native call (hg_decode_layer): a decode step's layer
        with the native attention, ~20 µs of Python and ctypes a layer less."""
        out = torch.empty_like(x)  # (B, hidden) float32
        cache = attend.cache  # (layers, 2*KVH, N, block_size, D)
        w = (self.qkv, self.o, self.gate_up, self.down)
        self.kernels.decode_layer(
            x.shape[0], x.shape[1], self.num_heads, self.num_kv_heads, self.head_dim, self.down.k, x.data_ptr(),
            self.input_norm.data_ptr(), self.post_attn_norm.data_ptr(), self.eps,
            *(p for m in w for p in (m.codes_ptr, m.scales_zeros_ptr)), cos.data_ptr(), sin_signed.data_ptr(),
            cos.stride(0), attend.layer_ptr(layer_idx), cache.shape[2], cache.shape[3], attend.tables.data_ptr(),
            attend.tables.shape[1], attend.context_lens.data_ptr(), self.head_dim ** -0.5, out.data_ptr())
        return out


@dataclass(frozen=True)
class FusedStack:
    """Every layer of a decode step in one native call (hg_decode_layers): the same bits as the layers'
    _decode_layer one by one, without ~30 Python calls a step. Built by ``stack_layers``."""

    first: FusedLayer  # dimensions, eps and the kernels (every layer alike)
    num_layers: int
    pointers: torch.Tensor  # (layers, 10) int64: norms and (codes, scales) of qkv, o, gate_up, down

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                attend: NativeDecodeAttention) -> torch.Tensor:
        """x (B, hidden) float32 after the embedding -> after the last layer (B, hidden) float32."""
        f, x = self.first, x.contiguous()
        out = torch.empty_like(x)
        cache = attend.cache  # (layers, 2*KVH, N, block_size, D)
        f.kernels.decode_layers(
            self.num_layers, x.shape[0], x.shape[1], f.num_heads, f.num_kv_heads, f.head_dim, f.down.k, x.data_ptr(),
            self.pointers.data_ptr(), f.eps, cos.data_ptr(), sin_signed.data_ptr(), cos.stride(0),
            cache.data_ptr(), cache.stride(0), cache.shape[2], cache.shape[3], attend.tables.data_ptr(),
            attend.tables.shape[1], attend.context_lens.data_ptr(), f.head_dim ** -0.5, out.data_ptr())
        return out


def stack_layers(layers: list[FusedLayer | None]) -> FusedStack | None:
    """The layers as one FusedStack, or None unless every one is fused alike without a q/k/v bias."""
    if not layers or any(f is None or f.qkv_bias is not None for f in layers):
        return None
    fused = [f for f in layers if f is not None]
    first = fused[0]
    shape = (first.eps, first.num_heads, first.num_kv_heads, first.head_dim, first.qkv.shape, first.down.shape)
    if any((f.eps, f.num_heads, f.num_kv_heads, f.head_dim, f.qkv.shape, f.down.shape) != shape for f in fused):
        return None
    pointers = torch.tensor([[f.input_norm.data_ptr(), f.post_attn_norm.data_ptr(),
                              *(p for m in (f.qkv, f.o, f.gate_up, f.down) for p in (m.codes_ptr, m.scales_zeros_ptr))]
                             for f in fused], dtype=torch.int64)
    return FusedStack(first, len(fused), pointers)
