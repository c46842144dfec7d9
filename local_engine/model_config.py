"""The architecture facts of a Llama-family decoder, read from GGUF metadata or config.json.

Plain Python (no torch): the loaders build it, the model and KV pool size themselves from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bytes per stored K/V element for each KV dtype name the engine accepts.
_KV_DTYPE_BYTES = {
    "fp32": 4, "float32": 4,
    "bf16": 2, "bfloat16": 2,
    "fp16": 2, "float16": 2, "half": 2,
    "fp8": 1, "fp8_e4m3": 1, "float8_e4m3fn": 1,
}


def kv_dtype_bytes(kv_dtype: Any) -> int:
    """Bytes per element of a KV dtype given by name ("bf16") or as a torch dtype."""
    itemsize = getattr(kv_dtype, "itemsize", None)
    if isinstance(itemsize, int):
        return itemsize
    name = str(kv_dtype).removeprefix("torch.").lower()
    if name not in _KV_DTYPE_BYTES:
        raise ValueError(f"unknown KV dtype {kv_dtype!r}; use one of {sorted(set(_KV_DTYPE_BYTES))}")
    return _KV_DTYPE_BYTES[name]


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3-style frequency scaling of RoPE (``rope_type == "llama3"``)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of one decoder; every field as in Hugging Face's LlamaConfig."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def kv_bytes_per_token(self, kv_dtype: Any = "bf16") -> int:
        """K and V of one token in every layer: 2 × layers × kv_heads × head_dim × bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * kv_dtype_bytes(kv_dtype)

    def num_parameters(self) -> int:
        """Weights in the model (embeddings counted once when tied)."""
        attn = self.hidden_size * (self.q_size + 2 * self.kv_size) + self.q_size * self.hidden_size
        mlp = 3 * self.hidden_size * self.intermediate_size
        layer = attn + mlp + 2 * self.hidden_size
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * layer + embed + self.hidden_size
