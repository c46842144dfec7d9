"""A tiny random-weight Llama (seeded) that speaks through SmolLM2's tokenizer: a real engine for tests."""
from __future__ import annotations

import torch

from local_engine.model_config import ModelConfig


def tiny_random_config(vocab_size: int, bos_token_id: int | None, eos_token_ids: tuple[int, ...]) -> ModelConfig:
    return ModelConfig(
        name="tiny-random", vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, rms_norm_eps=1e-5, rope_theta=10000.0,
        max_position_embeddings=4096, tie_word_embeddings=True, attention_bias=False,
        bos_token_id=bos_token_id, eos_token_ids=eos_token_ids)


def tiny_random_tensors(config: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Hugging Face-named float32 weights drawn from N(0, 0.02²) (norms at 1), reproducible per seed."""
    gen = torch.Generator().manual_seed(seed)
    hidden, inter = config.hidden_size, config.intermediate_size

    def normal(*shape: int, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    tensors = {"model.embed_tokens.weight": normal(config.vocab_size, hidden, std=0.5),
               "model.norm.weight": torch.ones(hidden)}
    for i in range(config.num_layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": torch.ones(hidden),
            p + "post_attention_layernorm.weight": torch.ones(hidden),
            p + "self_attn.q_proj.weight": normal(config.q_size, hidden, std=0.2),
            p + "self_attn.k_proj.weight": normal(config.kv_size, hidden, std=0.2),
            p + "self_attn.v_proj.weight": normal(config.kv_size, hidden, std=0.2),
            p + "self_attn.o_proj.weight": normal(hidden, config.q_size, std=0.2),
            p + "mlp.gate_proj.weight": normal(inter, hidden, std=0.2),
            p + "mlp.up_proj.weight": normal(inter, hidden, std=0.2),
            p + "mlp.down_proj.weight": normal(hidden, inter, std=0.2),
        }
    return tensors
