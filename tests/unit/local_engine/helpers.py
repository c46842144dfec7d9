"""Builders shared by the local-engine unit tests: a tiny model, a dense forward, block tables."""
from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from local_engine.batch import ScheduledBatch
from local_engine.loaders.tiny_random import tiny_random_config, tiny_random_tensors
from local_engine.model import LlamaModel, build_model
from local_engine.model_config import ModelConfig
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence
from local_engine.weights import fuse_hf_state_dict

VOCAB = 512


def tiny_config(**overrides: object) -> ModelConfig:
    base = tiny_random_config(VOCAB, bos_token_id=1, eos_token_ids=(2,))
    fields = {**base.__dict__, **overrides}
    return ModelConfig(**fields)  # type: ignore[arg-type]


def tiny_model(config: ModelConfig | None = None, seed: int = 0, dtype: torch.dtype = torch.float32) -> LlamaModel:
    config = config or tiny_config()
    tensors = tiny_random_tensors(config, seed)
    if config.attention_bias:
        gen = torch.Generator().manual_seed(seed + 1)
        for i in range(config.num_layers):
            for name, size in (("q", config.q_size), ("k", config.kv_size), ("v", config.kv_size)):
                tensors[f"model.layers.{i}.self_attn.{name}_proj.bias"] = torch.randn(size, generator=gen) * 0.1
    if not config.tie_word_embeddings:
        tensors["lm_head.weight"] = torch.randn(config.vocab_size, config.hidden_size,
                                                generator=torch.Generator().manual_seed(seed + 2)) * 0.5
    return build_model(config, fuse_hf_state_dict(config, tensors), dtype=dtype, device="cpu")


def dense_attention(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention over one whole sequence: q (T, H, D), k/v (T, KVH, D) -> (T, H, D)."""
    groups = q.shape[1] // k.shape[1]
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    kh, vh = kh.repeat_interleave(groups, dim=0), vh.repeat_interleave(groups, dim=0)
    return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True).transpose(0, 1)


def dense_logits(model: LlamaModel, token_ids: list[int]) -> torch.Tensor:
    """(T, vocab) logits of every position of one sequence, no cache involved."""
    with torch.inference_mode():
        ids = torch.tensor(token_ids)
        return model(ids, torch.arange(len(ids)), dense_attention).float()


class BlockPool:
    """Hands out shuffled block ids so block tables are never contiguous."""

    def __init__(self, num_blocks: int, seed: int = 0) -> None:
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)

    def fill(self, seq: Sequence, block_size: int, upto: int) -> None:
        while len(seq.block_table) * block_size < upto:
            seq.block_table.append(self.free.pop())


def make_runner(model: LlamaModel, *, num_blocks: int = 64, block_size: int = 4, attention: str = "fast",
                kv_dtype: torch.dtype | None = None) -> ModelRunner:
    return ModelRunner(model, model.config, device="cpu", dtype=model.dtype,
                       kv_dtype=kv_dtype, num_blocks=num_blocks, block_size=block_size,
                       attention=attention)  # type: ignore[arg-type]


def greedy(max_tokens: int = 8) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0)


def step(runner: ModelRunner, pool: BlockPool, seqs: list[Sequence], counts: list[int],
         is_prefill: bool) -> list[int | None]:
    """Run one batch the way the engine loop does: give blocks, run, then advance each sequence."""
    for seq, n in zip(seqs, counts):
        pool.fill(seq, runner.block_size, seq.num_cached_tokens + n)
    batch = ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if is_prefill else len(seqs))
    out = runner.run(batch)
    for seq, n, token in zip(seqs, counts, out.token_ids):
        seq.num_cached_tokens += n
        if token is not None:
            seq.append_token(token)
    return list(out.token_ids)
