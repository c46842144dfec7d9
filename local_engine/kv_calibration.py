"""The FP8 KV scales of a model, fixed once at load: a dense forward over a short built-in text records
each layer's and KV head's largest |K| (after RoPE) and |V|, which kv_quant turns into scales.

Fixed at load rather than per prompt or per block (vLLM's ``--calculate-kv-scales`` takes the first
batch's): the pool is shared, prefix-cached blocks outlive the prompt that wrote them, and a request's
output must not depend on which request came first.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F

from local_engine.kv_quant import scales_from_absmax
from local_engine.model import LlamaModel

# Prose, a chat turn, code and numbers: a few hundred tokens over the kinds of text the engine serves.
CALIBRATION_TEXTS = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, trimmed the wick, wound the "
    "clockwork that turned the lens, and wrote in the log: wind north-east, sea moderate, two ships passed.",
    "Question: What is the capital of France, and which river runs through it?\nAnswer: Paris, on the Seine. "
    "Question: Explain photosynthesis to a ten-year-old in two sentences.",
    "def fibonacci(n: int) -> list[int]:\n    a, b = 0, 1\n    out = []\n    for _ in range(n):\n"
    "        out.append(a)\n        a, b = b, a + b\n    return out\n\nprint(fibonacci(12))  # [0, 1, 1, 2, 3]",
    "Quarterly revenue rose 12.5% to $4,318 million; operating margin 23.1% (2023: 19.7%). Table 3: "
    "2019 1,204; 2020 987; 2021 1,562; 2022 2,010; 2023 2,341. Der Bericht, le rapport, el informe.",
)


class _Encoder(Protocol):
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str: ...


def calibration_token_ids(tokenizer: _Encoder) -> list[list[int]]:
    """The built-in texts as token ids, and one as a chat turn (the template's special tokens too)."""
    texts = list(CALIBRATION_TEXTS)
    try:
        texts.append(tokenizer.apply_chat_template([{"role": "user", "content": CALIBRATION_TEXTS[1]}]))
    except ValueError:  # ChatTemplateError: a model without a chat template
        pass
    return [tokenizer.encode(t) for t in texts]


def kv_absmax(model: LlamaModel, sequences: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """(layers, 2*KVH) float32: the largest |K| (heads 0..KVH-1) and |V| (the rest) the sequences produce."""
    config = model.config
    absmax = torch.zeros(config.num_layers, 2 * config.num_kv_heads, dtype=torch.float32, device=device)

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        kv = torch.cat([k, v], dim=1)  # (T, 2*KVH, D)
        absmax[layer] = torch.maximum(absmax[layer], kv.float().abs().amax(dim=(0, 2)))
        g = q.shape[1] // k.shape[1]
        out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1).repeat_interleave(g, 0),
                                             v.transpose(0, 1).repeat_interleave(g, 0), is_causal=True)
        return out.transpose(0, 1)  # (T, H, D)

    with torch.inference_mode():
        for ids in sequences:
            if ids:
                n = min(len(ids), model.rope_table.shape[0])
                model(torch.tensor(ids[:n], device=device), torch.arange(n, device=device), attend,
                      torch.tensor([n - 1], device=device))
    return absmax


def calibrate_scales(model: LlamaModel, sequences: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """(layers, 2*KVH) float32 power-of-two scales for an FP8 pool (kv_quant.scales_from_absmax)."""
    return scales_from_absmax(kv_absmax(model, sequences, device))
