"""Predicted TTFT p95 of one request on one backend, now: engines from their live state through the
performance model (the decode step in progress + the queue's and this prompt's uncached prefill,
at the rates the engine measures now), scaled by how far such predictions were off lately; hosted
backends from the TTFT this gateway observed (window p95, else EWMA), else the priors."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from policies.perf_model import engine_ttft
from policies.strategies.base import Context

if TYPE_CHECKING:
    from policies.live import HealthView


class Predicted(NamedTuple):
    """Immutable; a NamedTuple because one is built per candidate per request (cheaper than a frozen dataclass)."""

    ttft_s: float | None  # None: nothing known (an engine without fresh state)
    source: str  # live (×scale) | p95 | ewma | prior
    model_s: float | None = None  # engines: the model's own figure, before the learned scale


def predict_ttft(ctx: Context, backend: str) -> Predicted:
    if backend in ctx.policy.engines:
        return _engine(ctx, backend)
    return hosted_ttft(ctx, backend, ctx.live.health_of(backend))


def hosted_ttft(ctx: Context, backend: str, health: HealthView) -> Predicted:
    """A hosted backend's, from its health view (the caller has it already)."""
    if health.ttft_p95_s is not None:
        return Predicted(health.ttft_p95_s, "p95")
    if health.ttft_ewma_s is not None:
        return Predicted(health.ttft_ewma_s, "ewma")
    prior = ctx.policy.policy.backends[backend].expected_ttft_s
    return Predicted(prior if prior is not None else ctx.policy.perf_model.hosted_model(backend).ttft_p95_s, "prior")


def _engine(ctx: Context, backend: str) -> Predicted:
    """The engine's own state, fresh each poll, rather than TTFTs observed while traffic went there:
    an engine that fell out gets no traffic, so its observations would never recover (they only
    scale the prediction: policies/ttft_scale.py)."""
    live = ctx.live
    snap = live.engine(backend)
    if snap is None:
        return Predicted(None, "unknown")
    model = ctx.policy.perf_model.engine(backend)
    facts = ctx.facts
    prompt = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens)
    cached = int(prompt * facts.prefix_hit_rate.get(backend, 0.0))
    # The prefill work ahead of this one as the live state counts it for every strategy (LiveState.
    # queued_prompt_tokens: the polled queue taken to be like this prompt, ours sent since the poll at their
    # own size, less what an engine busy at the poll has worked off since). Ours sent since, and ours it does
    # not show yet (still on their way: HTTP, tokenizing), will all be in the batch it decodes meanwhile.
    queued = live.queued_prompt_tokens(backend, prompt) or 0
    mine = live.in_flight.get(backend)
    if mine is None:
        running = snap.num_running
    else:
        running = max(snap.num_running + max(0, mine.num_started_since) - mine.num_ended_since, mine.num)
    if snap.max_num_seqs:
        running = min(running, snap.max_num_seqs)
    used_tokens = (snap.num_blocks_total - snap.num_blocks_free) * snap.block_size  # the running batch's context
    # The rates the engine measured over its last seconds beat the model file's: they include what
    # else this (shared) machine is doing now.
    decode_step = running / snap.decode_tokens_per_s if running and snap.decode_tokens_per_s > 0 else None
    prefill_token = 1.0 / snap.prefill_tokens_per_s if snap.prefill_tokens_per_s > 0 else None
    predicted = engine_ttft(model, prompt_tokens=prompt, cached_tokens=cached, queued_prompt_tokens=queued,
                            num_running=running, running_context_tokens=used_tokens, decode_step_s=decode_step,
                            prefill_token_s=prefill_token)
    scale = live.ttft_scale.get(backend)
    if scale is None:
        return Predicted(predicted, "live", predicted)
    return Predicted(predicted * scale, f"live×{scale:.2g}", predicted)
