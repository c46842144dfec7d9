"""How the decoder's weights are named, fused and laid out for matmuls on each device.

Hugging Face names -> fused q/k/v and gate/up matrices; on CPUs with native bf16 also oneDNN
pre-packed copies, and — for 4-bit GGUF matrices — the file's own codes for an int4 kernel.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from local_engine.model_config import ModelConfig
from local_engine.native.fused_layer import NativeInt4

# Up to this many rows a matmul reads the 4-bit codes instead of the bf16 weights: measured on
# SmolLM2's layers (1 thread) 2.0x faster at 1 row, 1.5x at 4, but 1.4x slower at 16.
INT4_MAX_ROWS = 4
# The 4-bit matrix of the few-row path: torch's int4 kernel packing, or the native kernels' weight
Int4 = tuple[torch.Tensor, torch.Tensor] | NativeInt4
_INT4_GROUP = 32


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           packed: torch.Tensor | None = None, int4: Int4 | None = None,
           tile_rows: int | None = None) -> torch.Tensor:
    """x @ weight.T + bias: through the 4-bit codes for a few rows, or oneDNN's pre-packed weight.

    With ``tile_rows`` (batch-invariant mode) every call has exactly that many rows (zero-padded):
    a kernel may pick its blocking, and so its summation order, by the row count — oneDNN does for
    SmolLM2's down projection from 7 rows — so a row's result must never see how many rows came along.
    """
    if tile_rows is not None:
        return _tiled(x, tile_rows, lambda t: linear(t, weight, bias, packed, int4))
    if int4 is not None and x.shape[0] <= INT4_MAX_ROWS:
        out = int4_matmul(x, int4)
        return out if bias is None else out + bias
    if packed is not None:
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return F.linear(x, weight, bias)


def int4_matmul(x: torch.Tensor, int4: Int4) -> torch.Tensor:
    """x (S, K) bf16 @ the packed 4-bit weight (N, K).T -> (S, N) bf16, at any row count."""
    if isinstance(int4, NativeInt4):
        return int4.matmul(x)
    return torch._weight_int4pack_mm_for_cpu(x, int4[0], _INT4_GROUP, int4[1])


def _tiled(x: torch.Tensor, tile_rows: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """fn over consecutive tiles of exactly ``tile_rows`` rows of x (T, K), the last one zero-padded."""
    T = x.shape[0]
    if T == 0:
        return fn(x)
    padded = -(-T // tile_rows) * tile_rows
    if padded != T:
        x = F.pad(x, (0, 0, 0, padded - T))
    if padded == tile_rows:  # one tile (a decode step of a few sequences): no list, no cat
        return fn(x)[:T]
    return torch.cat([fn(x[i:i + tile_rows]) for i in range(0, padded, tile_rows)])[:T]


def pack_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q (N, K) uint8 codes, scale/zero (N, K/32) -> the CPU int4 kernel's packed weight and (K/32, N, 2) bf16."""
    scales_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1), scales_zeros


def int4_effective_weight(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor,
                          dtype: torch.dtype) -> torch.Tensor:
    """The weight the int4 kernel computes with — (q - 8) * scale + zero, scale and zero rounded to
    bf16 as pack_int4 stores them — in ``dtype`` (N, K).

    The larger matmuls use this instead of the file's dequantised weight, so both sides of the
    int4/bf16 switch see the same weights up to one bf16 rounding: a row's output then barely
    depends on how many rows the matmul has (the batch). Before, the scale and zero roundings
    (shared by each group of 32) moved a decode step's logits by up to 0.5 between batch 4 and 5.
    """
    n, k = q.shape
    s = scale.to(torch.bfloat16).float().repeat_interleave(_INT4_GROUP, dim=1)  # (N, K)
    z = zero.to(torch.bfloat16).float().repeat_interleave(_INT4_GROUP, dim=1)
    return (q.float() - 8.0).mul_(s).add_(z).to(dtype).view(n, k)


def can_prepack(weight: torch.Tensor) -> bool:
    """Pre-packing pays on CPUs with native bf16: measured 2x faster matmuls at batch 16-64 and
    ~1.9x at batch 1 (1 thread, SmolLM2 shapes), because oneDNN otherwise re-lays-out the weight
    on every call; results are bit-identical."""
    return (weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


def prepack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, 1)


INT4_SUFFIXES = (".int4_q", ".int4_scale", ".int4_zero")


def fuse_int4_weights(config: ModelConfig, hf: Mapping[str, tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
    """4-bit weights (q, scale, zero) by Hugging Face name -> this module's state names, fused like
    the plain weights; a fused matrix is kept only when all its parts are 4-bit."""
    out: dict[str, torch.Tensor] = {}
    fused = {"qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
             "o_proj": ("self_attn.o_proj",), "gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
             "down_proj": ("mlp.down_proj",)}
    for i in range(config.num_layers):
        for name, parts in fused.items():
            found = [hf.get(f"model.layers.{i}.{part}.weight") for part in parts]
            if all(f is not None for f in found):
                for j, suffix in enumerate(INT4_SUFFIXES):
                    out[f"layers.{i}.{name}{suffix}"] = torch.cat([f[j] for f in found if f is not None])
    return out


def fuse_hf_state_dict(config: ModelConfig, hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face names -> this module's names (q/k/v and gate/up fused); raises KeyError if one is missing."""
    out: dict[str, torch.Tensor] = {"embed_tokens.weight": hf["model.embed_tokens.weight"],
                                    "norm": hf["model.norm.weight"]}
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = hf["lm_head.weight"]
    if "rope_freq_factors" in hf:
        out["rope_freq_factors"] = hf["rope_freq_factors"]
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        out[f"layers.{i}.input_norm"] = hf[p + "input_layernorm.weight"]
        out[f"layers.{i}.post_attn_norm"] = hf[p + "post_attention_layernorm.weight"]
        out[f"layers.{i}.qkv_proj.weight"] = torch.cat(
            [hf[a + "q_proj.weight"], hf[a + "k_proj.weight"], hf[a + "v_proj.weight"]])
        if config.attention_bias:
            out[f"layers.{i}.qkv_proj.bias"] = torch.cat(
                [hf[a + "q_proj.bias"], hf[a + "k_proj.bias"], hf[a + "v_proj.bias"]])
        out[f"layers.{i}.o_proj.weight"] = hf[a + "o_proj.weight"]
        out[f"layers.{i}.gate_up_proj.weight"] = torch.cat(
            [hf[p + "mlp.gate_proj.weight"], hf[p + "mlp.up_proj.weight"]])
        out[f"layers.{i}.down_proj.weight"] = hf[p + "mlp.down_proj.weight"]
    return out


