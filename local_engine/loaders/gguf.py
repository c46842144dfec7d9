"""Read a GGUF file: metadata -> ModelConfig, tensors -> a Hugging Face-named float state dict.

llama.cpp stores Q/K rows of "llama" models permuted for its interleaved RoPE; we undo that
so the model can use Hugging Face's rotate-half RoPE for every architecture.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from local_engine.loaders.gguf_quants import dequantize, int4_groups, int8_as_int4_halves, int8_groups
from local_engine.loaders.gguf_reader import GGUFFormatError, GGUFTensor, read_gguf
from local_engine.model_config import ModelConfig, RopeScaling

SUPPORTED_ARCHS = ("llama", "qwen2", "mistral")
_PERMUTED_ARCHS = ("llama", "mistral")  # converted with convert_hf_to_gguf's LlamaModel.permute

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "rope_freqs.weight": "rope_freq_factors",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


class GGUFError(ValueError):
    """The file is not a GGUF model this engine can run."""


@dataclass(frozen=True)
class GGUFModel:
    """An opened GGUF file: its metadata as plain values and its (memory-mapped) tensors."""

    path: Path
    metadata: dict[str, Any]
    tensors: tuple[GGUFTensor, ...]

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))


def open_gguf(path: str | Path) -> GGUFModel:
    path = Path(path)
    try:
        metadata, tensors = read_gguf(path)
    except (GGUFFormatError, OSError) as exc:
        raise GGUFError(str(exc)) from exc
    model = GGUFModel(path=path, metadata=metadata, tensors=tuple(tensors))
    if model.arch not in SUPPORTED_ARCHS:
        raise GGUFError(f"{path}: architecture {model.arch!r} is not supported (supported: {SUPPORTED_ARCHS})")
    return model


def model_config(model: GGUFModel) -> ModelConfig:
    md, arch = model.metadata, model.arch

    def get(key: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{key}", default)

    num_heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    head_dim = int(get("attention.key_length") or get("rope.dimension_count") or hidden // num_heads)
    tensor_names = {t.name for t in model.tensors}
    vocab = get("vocab_size") or len(md.get("tokenizer.ggml.tokens") or [])
    eos = md.get("tokenizer.ggml.eos_token_id")
    return ModelConfig(
        name=str(md.get("general.name") or model.path.stem),
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")),
        num_layers=int(get("block_count")),
        num_heads=num_heads,
        num_kv_heads=int(get("attention.head_count_kv") or num_heads),
        head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(get),
        max_position_embeddings=int(get("context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        bos_token_id=_opt_int(md.get("tokenizer.ggml.bos_token_id")),
        eos_token_ids=() if eos is None else (int(eos),),
    )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _rope_scaling(get: Any) -> RopeScaling | None:
    # llama.cpp writes llama3 scaling into a rope_freqs tensor, not metadata; only linear/yarn
    # have metadata, which we do not support: refuse rather than run with the wrong positions.
    kind = get("rope.scaling.type")
    if kind in (None, "none"):
        return None
    raise GGUFError(f"RoPE scaling type {kind!r} is not supported")


def iter_state_dict(model: GGUFModel, config: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(Hugging Face name, float32 array) for every tensor, Q/K rows back in HF order."""
    for tensor in model.tensors:
        name = _hf_name(tensor.name)
        if name is None:
            continue
        array = dequantize(tensor.data, tensor.type_id, tensor.shape)
        if model.arch in _PERMUTED_ARCHS:
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                array = unpermute_rope_rows(array, config.num_heads)
            elif name.endswith(("k_proj.weight", "k_proj.bias")):
                array = unpermute_rope_rows(array, config.num_kv_heads)
        yield name, array


def iter_int4_weights(model: GGUFModel, config: ModelConfig) -> Iterator[tuple[str, tuple[np.ndarray, ...]]]:
    """(Hugging Face name, (q, scale, zero)) for every 4-bit matrix (see gguf_quants.int4_groups)."""
    for tensor in model.tensors:
        name = _hf_name(tensor.name)
        groups = None if name is None else int4_groups(tensor.data, tensor.type_id, tensor.shape)
        if name is None or groups is None:
            continue
        if model.arch in _PERMUTED_ARCHS and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if "q_proj" in name else config.num_kv_heads
            groups = tuple(unpermute_rope_rows(a, heads) for a in groups)
        yield name, groups


def head_int4_groups(model: GGUFModel, config: ModelConfig) -> tuple[np.ndarray, ...] | None:
    """The LM head's codes as 4-bit groups (q, scale, zero) for the int4 kernel: a 4-bit head as it is,
    a Q8_0 one as two 4-bit halves of twice the rows (gguf_quants.int8_as_int4_halves); else None."""
    want = "model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"
    for tensor in model.tensors:
        if _hf_name(tensor.name) != want:
            continue
        groups = int4_groups(tensor.data, tensor.type_id, tensor.shape)
        if groups is not None:
            return groups
        int8 = int8_groups(tensor.data, tensor.type_id, tensor.shape)
        return None if int8 is None else int8_as_int4_halves(*int8)
    return None


def _hf_name(gguf_name: str) -> str | None:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _BLOCK_RE.match(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    return None


def unpermute_rope_rows(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute``: per head, rows (d/2, 2) interleaved -> (2, d/2) halves."""
    rows = w.shape[0]
    head_dim = rows // num_heads
    return (w.reshape(num_heads, head_dim // 2, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))
