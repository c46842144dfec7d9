"""Next-token choice for a batch: penalties, greedy or temperature / top-k / top-p sampling, logprobs.

Seeded requests are reproducible whatever they are batched with: each seeded row draws its
noise from a generator seeded by (seed, index of the token being sampled).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from local_engine.sequence import SamplingParams
from local_engine.step_output import TokenLogprobs

_SEED_STRIDE = 1_000_003  # mixes the request seed with the token index
_MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingRow:
    """One sequence to sample for: its settings and its completion so far (for penalties and the seed)."""

    params: SamplingParams
    output_token_ids: list[int]


def sample(logits: torch.Tensor, rows: list[SamplingRow]) -> tuple[list[int], list[TokenLogprobs | None]]:
    """logits (S, V) float32, one row per entry of ``rows`` -> chosen ids and optional logprobs."""
    logprob_rows = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
    raw_logprobs = torch.log_softmax(logits[logprob_rows], dim=-1) if logprob_rows else None
    logits = _apply_penalties(logits, rows)
    greedy = [r.params.temperature <= 0 or r.params.top_k == 1 for r in rows]
    chosen = logits.argmax(dim=-1)  # (S,)
    sampled = [i for i, g in enumerate(greedy) if not g]
    if sampled:
        chosen[sampled] = _sample_rows(logits[sampled], [rows[i] for i in sampled])
    token_ids = chosen.tolist()
    logprobs: list[TokenLogprobs | None] = [None] * len(rows)
    if raw_logprobs is not None:
        for j, i in enumerate(logprob_rows):
            logprobs[i] = _token_logprobs(raw_logprobs[j], token_ids[i], rows[i].params.logprobs or 0)
    return token_ids, logprobs


def _apply_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    penalised = [i for i, r in enumerate(rows) if (r.params.presence_penalty or r.params.frequency_penalty)
                 and r.output_token_ids]
    if not penalised:
        return logits
    logits = logits.clone()
    for i in penalised:  # OpenAI semantics, over the tokens generated so far
        p = rows[i].params
        ids = torch.tensor(rows[i].output_token_ids, device=logits.device)
        counts = torch.zeros_like(logits[i]).index_add_(0, ids, torch.ones_like(ids, dtype=logits.dtype))
        logits[i] -= counts * p.frequency_penalty + (counts > 0).to(logits.dtype) * p.presence_penalty
    return logits


def _sample_rows(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    """(R, V) logits of rows that sample -> (R,) ids, after temperature, top-k and top-p."""
    temperature = torch.tensor([r.params.temperature for r in rows], device=logits.device)
    logits = logits / temperature[:, None]
    if any(r.params.top_k > 0 or r.params.top_p < 1.0 for r in rows):
        logits = _top_k_top_p(logits, [r.params.top_k for r in rows], [r.params.top_p for r in rows])
    probs = torch.softmax(logits, dim=-1)
    # Exponential race: argmax(p / E) with E ~ Exp(1) draws from p, and lets every row use its own noise.
    noise = torch.empty_like(probs).exponential_()
    for i, row in enumerate(rows):
        if row.params.seed is not None:
            noise[i].exponential_(generator=_row_generator(row.params.seed, len(row.output_token_ids), probs.device))
    return (probs / noise).argmax(dim=-1)


def _row_generator(seed: int, token_index: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * _SEED_STRIDE + token_index) % (1 << 63))
    return gen


def _top_k_top_p(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Set to -inf every logit outside each row's top-k and its top-p nucleus (at least one kept)."""
    R, V = logits.shape
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (R, V)
    k = torch.tensor([V if t <= 0 else min(t, V) for t in top_k], device=logits.device)
    rank = torch.arange(V, device=logits.device)[None, :]
    drop = rank >= k[:, None]
    probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
    before = probs.cumsum(dim=-1) - probs  # mass of strictly better tokens
    p = torch.tensor(top_p, device=logits.device, dtype=probs.dtype)
    drop |= before >= p[:, None]
    drop[:, 0] = False
    return logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))


def _token_logprobs(row: torch.Tensor, token_id: int, k: int) -> TokenLogprobs:
    k = max(0, min(k, _MAX_TOP_LOGPROBS))
    top: tuple[tuple[int, float], ...] = ()
    if k:
        values, ids = row.topk(k)
        top = tuple(zip(ids.tolist(), values.tolist()))
    return TokenLogprobs(token_id=token_id, logprob=float(row[token_id]), top=top)
