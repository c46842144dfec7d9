"""What the model runner returns for one engine step (plain values, no torch)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLogprobs:
    """Log-probabilities of one sampled position under the model (before penalties and temperature)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # the k most likely (token_id, logprob), best first


@dataclass(frozen=True)
class StepOutput:
    """Per sequence of the ScheduledBatch, in batch order."""

    token_ids: tuple[int | None, ...]  # the sampled token; None where the step did not sample (chunked prefill)
    logprobs: tuple[TokenLogprobs | None, ...]  # set where the request asked for logprobs and a token was sampled
