"""cheapest_within_slo: `candidates` predicted to meet the TTFT SLO, cheapest first, then the rest
by predicted TTFT (observed p95, else EWMA; for engines at least the queue's and this prompt's prefill)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from policies.rule_schema import RuleBase
from policies.strategies.base import Context, Outcome, closed_note, is_open, show
from policies.strategies.kv_fit import engine_fit


class CheapestWithinSloRule(RuleBase):
    """`candidates` in any order; `slo`: a name from the policy's `slos`."""

    target_fields: ClassVar[tuple[str, ...]] = ("candidates",)
    required_targets: ClassVar[str] = "candidates"
    slo_fields: ClassVar[tuple[str, ...]] = ("slo",)

    strategy: Literal["cheapest_within_slo"]
    candidates: list[str] = Field(min_length=1)
    slo: str


def _predicted_ttft(ctx: Context, backend: str) -> float | None:
    """Observed TTFT p95 (else EWMA); for engines at least the prefill time of this prompt behind
    the queue; else the backend's configured prior; None when nothing is known."""
    health = ctx.live.health_of(backend)
    observed = health.ttft_p95_s if health.ttft_p95_s is not None else health.ttft_ewma_s
    snap = ctx.live.engine(backend)
    modelled = None
    if snap is not None and snap.prefill_tokens_per_s > 0:
        prompt = ctx.facts.prompt_tokens_by_backend.get(backend, ctx.facts.prompt_tokens)
        uncached = prompt * (1.0 - ctx.facts.prefix_hit_rate.get(backend, 0.0))
        queued = ctx.live.queued_prompt_tokens(backend, prompt) or 0  # ours sent since the poll at their size
        modelled = (uncached + queued) / snap.prefill_tokens_per_s
    known = [v for v in (observed, modelled) if v is not None]
    return max(known) if known else ctx.policy.policy.backends[backend].expected_ttft_s


def cheapest_within_slo(rule: CheapestWithinSloRule, ctx: Context) -> Outcome | None:
    candidates = [b for b in rule.candidates if b in ctx.usable]
    if not candidates:
        return None
    slo = ctx.policy.policy.slos[rule.slo].ttft_p95_s
    meeting: list[tuple[float, str]] = []
    missing: list[tuple[float, str]] = []
    notes: list[str] = []
    unknown: list[str] = []
    never = 0
    for backend in candidates:
        if backend in ctx.policy.engines:
            fit = engine_fit(ctx, backend, None)
            if fit.key is None:
                notes.append(fit.note)
                unknown += [backend] if fit.unknown else []
                never += fit.never
                continue
        elif is_open(ctx, backend):
            notes.append(closed_note(ctx, backend))
            continue
        ttft = _predicted_ttft(ctx, backend)
        cost = ctx.facts.est_cost_usd.get(backend)
        notes.append(f"{backend}: ttft {show(ttft, '{:.3g}s')}, {show(cost, '${:.3g}')}")
        if ttft is None or ttft <= slo:  # unknown TTFT counts as meeting: it is how we learn it
            meeting.append((float("inf") if cost is None else cost, backend))
        else:
            missing.append((ttft, backend))
    backends = (*(b for _, b in sorted(meeting)), *(b for _, b in sorted(missing)), *unknown)
    head = f"cheapest within ttft p95 ≤ {slo:g}s" if meeting else f"none meets ttft p95 ≤ {slo:g}s; fastest first"
    if not backends and never == len(candidates):
        return Outcome((), f"too large for every candidate: {'; '.join(notes)}", "too_large")
    if not backends:
        return Outcome((), f"{head}: {'; '.join(notes)}", "no_capacity", ctx.policy.policy.defaults.retry_after_s)
    return Outcome(backends, f"{head}: {'; '.join(notes)}")
