"""A Llama-family decoder (Llama 2/3.x, Mistral, Qwen2/2.5, SmolLM2) as a plain nn.Module.

Tokens of every sequence in a step are flattened to one (T, ...) stream; attention is a callable
handed in by the caller (paged through the KV cache in the runner, dense in tests), so the
model knows nothing of blocks or batches. Q/K/V and gate/up projections are fused for speed.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from local_engine.model_config import ModelConfig
from local_engine.native.fused_layer import FusedLayer, FusedStack, NativeInt4, stack_layers
from local_engine.native.kernels import OUT_HALVES, NativeKernels, load_kernels, pack_q4
from local_engine.native.paged_decode import NativeDecodeAttention
from local_engine.weights import (
    INT4_MAX_ROWS,
    INT4_SUFFIXES,
    Int4,
    can_prepack,
    int4_effective_weight,
    int4_matmul,
    linear,
    pack_int4,
    prepack,
)

# The LM head reads the file's codes (Q8_0 as two 4-bit halves) up to this many rows instead of the
# bf16 embedding: SmolLM2's head (49k x 576) at 1 row, 1 thread, load ~9: 5.8 vs 12.3 ms wall,
# 3.4 vs 4.6 ms CPU; at 2-4 rows about even, at 5 the int4 kernel is 2x slower (docs/benchmarks.md).
HEAD_INT4_MAX_ROWS = 1

# (layer index, q (T, H, D), k (T, KVH, D), v (T, KVH, D)) -> attention output (T, H, D)
AttentionFn = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rope_inv_freq(config: ModelConfig, freq_factors: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse RoPE frequencies (D/2,) float32, with Llama-3 scaling when the config asks for it."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device="cpu") / dim))
    scaling = config.rope_scaling
    if scaling is not None:
        low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
        high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        smooth = ((scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor)
                  / (scaling.high_freq_factor - scaling.low_freq_factor))
        mid = (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor,
                               torch.where(wavelen < high_wavelen, inv_freq, mid))
    if freq_factors is not None:  # llama.cpp's rope_freqs tensor: divisors of the frequencies
        inv_freq = inv_freq / freq_factors.to("cpu", torch.float64)
    return inv_freq.to(torch.float32)


def rope_cos_sin(inv_freq: torch.Tensor, max_positions: int) -> torch.Tensor:
    """(max_positions, 2, D) float32 table of cos and signed sin (-sin, sin) for rotate-half RoPE."""
    t = torch.arange(max_positions, dtype=torch.float32, device=inv_freq.device)
    freqs = torch.outer(t, inv_freq)  # (P, D/2)
    sin = freqs.sin()
    return torch.stack([torch.cat([freqs.cos(), freqs.cos()], dim=-1), torch.cat([-sin, sin], dim=-1)], dim=1)


def rope_(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> None:
    """Rotate x (T, N, D) in place, rotate-half form: x*cos + (x2, x1)*(-sin, sin); cos/sin (T, 1, D)."""
    swapped = x.roll(x.shape[-1] // 2, -1)  # (x2, x1): one kernel where two slices and a cat were three
    x.mul_(cos).addcmul_(swapped, sin_signed)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.eps = config.rms_norm_eps
        hidden = config.hidden_size
        self.input_norm = nn.Parameter(torch.ones(hidden))
        self.post_attn_norm = nn.Parameter(torch.ones(hidden))
        self.qkv_proj = nn.Linear(hidden, config.q_size + 2 * config.kv_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(config.q_size, hidden, bias=False)
        self.gate_up_proj = nn.Linear(hidden, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, hidden, bias=False)
        self.packed: dict[str, torch.Tensor] = {}  # oneDNN pre-packed weights (see prepack_weights)
        self.int4_codes: dict[str, tuple[torch.Tensor, ...]] = {}  # the file's 4-bit (q, scale, zero)
        self.int4: dict[str, Int4] = {}  # packed for the CPU int4 kernel (torch's or the native one)
        self.fused: FusedLayer | None = None  # the native kernels' whole layer for steps of a few rows
        self.tile_rows: int | None = None  # batch-invariant mode: every matmul in tiles of this many rows

    def prepack_weights(self, kernels: NativeKernels | None = None) -> None:
        names = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
        for n, codes in self.int4_codes.items():  # the same weights on both sides of the int4 switch
            weight = getattr(self, n).weight
            weight.data = int4_effective_weight(*codes, weight.dtype).to(weight.device)
        self.packed = {n: prepack(getattr(self, n).weight) for n in names}
        if kernels is None:
            self.int4 = {n: pack_int4(*codes) for n, codes in self.int4_codes.items()}
            return
        q4 = {n: pack_q4(*codes) for n, codes in self.int4_codes.items()}
        self.int4 = {n: NativeInt4(kernels, w) for n, w in q4.items()}
        if all(n in q4 for n in names) and self.head_dim <= 1024:  # the RoPE kernel's row buffer
            bias = self.qkv_proj.bias
            self.fused = FusedLayer(kernels, q4["qkv_proj"], q4["o_proj"], q4["gate_up_proj"], q4["down_proj"],
                                    None if bias is None else bias.detach(), self.input_norm.detach(),
                                    self.post_attn_norm.detach(), self.eps, self.num_heads, self.num_kv_heads,
                                    self.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor,
                attend: AttentionFn) -> torch.Tensor:
        # x: (T, hidden); cos/sin_signed: (T, 1, D). Functional calls and in-place ops keep the
        # per-layer kernel count low: at batch 1 on a CPU the step is mostly per-op overhead.
        T = x.shape[0]
        if self.fused is not None and T <= INT4_MAX_ROWS and self.tile_rows is None:
            return self.fused.forward(self.layer_idx, x, cos, sin_signed, attend)
        H, KVH, D = self.num_heads, self.num_kv_heads, self.head_dim
        dtype = self.qkv_proj.weight.dtype
        h = F.rms_norm(x, x.shape[-1:], self.input_norm, self.eps).to(dtype)
        packed, int4, tiles = self.packed.get, self.int4.get, self.tile_rows
        qkv = linear(h, self.qkv_proj.weight, self.qkv_proj.bias, packed("qkv_proj"), int4("qkv_proj"), tiles)
        qkv = qkv.view(T, H + 2 * KVH, D)
        rope_(qkv[:, :H + KVH], cos, sin_signed)  # q and k heads together
        attn = attend(self.layer_idx, qkv[:, :H], qkv[:, H:H + KVH], qkv[:, H + KVH:])  # (T, H, D)
        x = x + linear(attn.reshape(T, H * D), self.o_proj.weight, None, packed("o_proj"), int4("o_proj"), tiles)
        h = F.rms_norm(x, x.shape[-1:], self.post_attn_norm, self.eps).to(dtype)
        gate_up = linear(h, self.gate_up_proj.weight, None, packed("gate_up_proj"), int4("gate_up_proj"),
                         tiles)  # (T, 2I)
        gate, up = gate_up.view(T, 2, -1).unbind(1)
        act = F.silu(gate).mul_(up)  # (T, I)
        return x + linear(act, self.down_proj.weight, None, packed("down_proj"), int4("down_proj"), tiles)


class LlamaModel(nn.Module):
    """Embeddings, decoder layers, final norm and LM head; ``forward`` returns logits of chosen rows."""

    def __init__(self, config: ModelConfig, max_positions: int | None = None) -> None:
        super().__init__()
        self.config = config
        self.max_positions = min(max_positions or config.max_position_embeddings, config.max_position_embeddings)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = nn.Parameter(torch.ones(config.hidden_size))
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(
            config.hidden_size, config.vocab_size, bias=False)
        self.packed_head: torch.Tensor | None = None
        self.head_int4_codes: tuple[torch.Tensor, ...] | None = None  # the file's head as 4-bit (q, scale, zero)
        self.head_int4: Int4 | None = None  # packed for the CPU int4 kernel
        self.native: NativeKernels | None = None  # the native kernels, when prepack_weights loaded them
        self.fused_stack: FusedStack | None = None  # every fused layer in one native call (decode steps)
        self.tile_rows: int | None = None  # see make_batch_invariant
        # Not a buffer: .to(dtype) must not round the angles, so the table is float32, rebuilt per device.
        self.inv_freq = rope_inv_freq(config)  # (D/2,) float32 on the CPU
        self.rope_table = rope_cos_sin(self.inv_freq, self.max_positions)  # (P, 2, D)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (norm weights and the residual stream are float32 whatever it is)."""
        return self.embed_tokens.weight.dtype

    @property
    def kernels_path(self) -> str:
        """Which kernels small steps run on: "native" (local_engine/native; "native+int8" with 8-bit
        activations) or "torch"."""
        return "torch" if self.native is None else "native+int8" if self.native.activations == "int8" else "native"

    @property
    def decoder_layers(self) -> list[DecoderLayer]:
        return [cast(DecoderLayer, layer) for layer in self.layers]

    def prepack_weights(self, activations: str | None = None) -> bool:
        """Keep oneDNN-packed copies of the matmul weights (bf16 on CPU only); True if it did.
        ``activations``: the native kernels' input rows (kernels.activations_setting).

        The plain weights stay (embedding lookups, logit rescoring, state_dict); moving or casting
        the model afterwards drops the packed copies.
        """
        head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        if not can_prepack(head):
            return False
        has_codes = self.head_int4_codes is not None or any(layer.int4_codes for layer in self.decoder_layers)
        self.native = load_kernels(activations=activations) if has_codes else None
        for layer in self.decoder_layers:
            layer.prepack_weights(self.native)
        self.fused_stack = stack_layers([layer.fused for layer in self.decoder_layers])
        self.packed_head = prepack(head)
        if self.head_int4_codes is not None and self.head_int4_codes[0].shape[0] in (head.shape[0], 2 * head.shape[0]):
            self.head_int4 = (pack_int4(*self.head_int4_codes) if self.native is None
                              else NativeInt4(self.native, pack_q4(*self.head_int4_codes)))
        return True

    def make_batch_invariant(self, tile_rows: int) -> None:
        """Every matmul in fixed tiles of ``tile_rows`` rows and the logit rescoring row by row, so a
        token's logits do not depend on how many rows its step had (``--deterministic``)."""
        self.tile_rows = tile_rows
        for layer in self.decoder_layers:
            layer.tile_rows = tile_rows

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self.packed_head, self.head_int4, self.fused_stack = None, None, None
        for layer in self.decoder_layers:
            layer.packed, layer.int4, layer.fused = {}, {}, None
        super()._apply(fn, recurse)
        for module in [self, *self.layers]:  # norm weights stay float32, like the residual stream
            for name, param in module.named_parameters(recurse=False):
                if param.dim() == 1 and "norm" in name and param.dtype != torch.float32:
                    param.data = param.data.float()
        device = self.norm.device
        if self.rope_table.device != device:
            self.rope_table = rope_cos_sin(self.inv_freq, self.max_positions).to(device)
        return self

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, attend: AttentionFn,
                logits_indices: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, positions: (T,); logits_indices: (S,) rows to project (default all) -> (S, vocab)."""
        x = self.embed_tokens(input_ids).float()  # (T, hidden): the residual stream stays float32
        cos_sin = self.rope_table[positions].to(self.embed_tokens.weight.dtype)  # (T, 2, D)
        cos, sin_signed = cos_sin[:, 0:1], cos_sin[:, 1:2]  # (T, 1, D)
        if (self.fused_stack is not None and isinstance(attend, NativeDecodeAttention) and self.tile_rows is None
                and x.shape[0] <= INT4_MAX_ROWS):
            x = self.fused_stack.forward(x, cos, sin_signed, attend)  # a decode step's layers: one native call
        else:
            for layer in self.layers:
                x = layer.forward(x, cos, sin_signed, attend)  # skip nn.Module call hooks: 30+ calls a step
        if logits_indices is not None:
            x = x[logits_indices]  # (S, hidden)
        head = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        x = F.rms_norm(x, x.shape[-1:], self.norm, self.config.rms_norm_eps)  # (S, hidden) float32
        logits = self._project(x, head)  # (S, V) float32
        if head.dtype != torch.float32 and logits.numel():
            if self.tile_rows is None:
                _rescore_top_(logits, x, head)
            else:  # one row per call: the einsum's bmm is not promised to be row-count invariant
                for i in range(logits.shape[0]):
                    _rescore_top_(logits[i:i + 1], x[i:i + 1], head)
        return logits

    def _project(self, x: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
        """x (S, hidden) float32 -> logits (S, V) float32: through the head's 4-bit codes for one row.

        A Q8_0 head is two 4-bit halves of V rows each whose outputs add up to it (its logits then
        carry two bf16 output roundings instead of one: the rescoring below makes the top ones exact).
        """
        if self.head_int4 is not None and self.tile_rows is None and 0 < x.shape[0] <= HEAD_INT4_MAX_ROWS:
            V = head.shape[0]
            if isinstance(self.head_int4, NativeInt4) and self.head_int4.weight.shape[0] == 2 * V:
                # the two halves summed in float32 in the kernel: one rounding fewer than below
                return self.head_int4.kernels.q4_linear(self.head_int4.weight, x.to(torch.bfloat16),
                                                        out_mode=OUT_HALVES)
            out = int4_matmul(x.to(torch.bfloat16), self.head_int4)  # (S, V) or (S, 2V)
            return out.float() if out.shape[1] == V else out[:, :V].float().add_(out[:, V:])
        return linear(x.to(head.dtype), head, None, self.packed_head, tile_rows=self.tile_rows).float()

    def set_rope_freq_factors(self, factors: torch.Tensor) -> None:
        """Apply llama.cpp's rope_freqs divisors (Llama 3.x GGUFs carry their RoPE scaling this way)."""
        self.inv_freq = rope_inv_freq(self.config, factors)
        self.rope_table = rope_cos_sin(self.inv_freq, self.max_positions).to(self.norm.device)


_RESCORED = 16  # candidates whose logits are recomputed in float32


def _rescore_top_(logits: torch.Tensor, x: torch.Tensor, head: torch.Tensor) -> None:
    """Recompute the top candidates' logits in float32, in place.

    A bf16 output rounds logits of magnitude ~20 by up to 0.06, enough to flip greedy choices
    between near-tied tokens; the few tokens that can win are scored exactly instead.
    """
    top = top_indices(logits, _RESCORED)  # (S, K)
    exact = torch.einsum("sh,skh->sk", x, head[top].float())  # (S, K)
    logits.scatter_(1, top, exact)


_CHUNK = 128  # vocabulary chunk of the two-stage top-k


def top_indices(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (S, k) of each row's k largest logits (S, V), in no particular order.

    A top-k over a 49k vocabulary costs ~4 ms at 64 rows on a CPU; the k largest lie in the k
    chunks with the largest maxima, so a chunk max (vectorised) and two small top-ks find the
    same set ~4x faster.
    """
    S, V = logits.shape
    if V % _CHUNK or V // _CHUNK < k:
        return logits.topk(k, dim=-1).indices
    chunks = logits.view(S, V // _CHUNK, _CHUNK)
    best = chunks.amax(dim=-1).topk(k, dim=-1).indices  # (S, k) chunk ids
    cand = chunks.gather(1, best[:, :, None].expand(-1, -1, _CHUNK)).view(S, k * _CHUNK)
    pos = cand.topk(k, dim=-1).indices  # (S, k) within the candidates
    return best.gather(1, pos // _CHUNK) * _CHUNK + pos % _CHUNK


def build_model(config: ModelConfig, state: Mapping[str, torch.Tensor], *, dtype: torch.dtype,
                device: torch.device | str, max_positions: int | None = None) -> LlamaModel:
    """A model on ``device`` in ``dtype`` from this module's state dict (see weights.fuse_hf_state_dict).

    Built on the meta device and filled by assignment: no random init, and no copy where the
    tensors already have the right dtype and device (e.g. memory-mapped from the weight cache).
    """
    state = dict(state)
    factors = state.pop("rope_freq_factors", None)
    codes = {name: state.pop(name) for name in list(state) if name.endswith(INT4_SUFFIXES)}
    with torch.device("meta"):
        model = LlamaModel(config, max_positions)
    expected = model.state_dict()
    for name, value in state.items():
        if name in expected and expected[name].shape != value.shape:
            raise ValueError(f"weight {name}: shape {tuple(value.shape)}, expected {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype)
    if factors is not None:
        model.set_rope_freq_factors(factors)
    if "head" + INT4_SUFFIXES[0] in codes:
        model.head_int4_codes = tuple(codes["head" + suffix] for suffix in INT4_SUFFIXES)
    for layer in model.decoder_layers:
        for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"):
            key = f"layers.{layer.layer_idx}.{name}"
            if key + INT4_SUFFIXES[0] in codes:
                layer.int4_codes[name] = tuple(codes[key + suffix] for suffix in INT4_SUFFIXES)
    # inference only; weights that require grad also send F.rms_norm down a slow composite path
    return model.requires_grad_(False).eval()
