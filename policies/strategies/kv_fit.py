"""kv_fit: engines in `local` that fit the request (KV blocks, context and a short queue), fewest
waiting then most headroom first, then `spill`, then engines whose state is unknown as a last resort."""
from __future__ import annotations

from typing import ClassVar, Literal, NamedTuple

from pydantic import Field

from policies.lazy_text import later
from policies.rule_schema import RuleBase
from policies.strategies.base import Context, Outcome, closed_note, is_open
from policies.strategies.fair_share import fair_share


class LocalSpillRule(RuleBase):
    """Engines to try first (`local`), hosted backends to spill to (`spill`), a queue limit."""

    target_fields: ClassVar[tuple[str, ...]] = ("local", "spill")
    required_targets: ClassVar[str] = "local"
    engine_fields: ClassVar[tuple[str, ...]] = ("local",)

    local: list[str] = Field(min_length=1)
    spill: list[str] = Field(default_factory=list)
    max_waiting: int | None = Field(default=None, ge=0)  # default: the backend's own max_waiting


class KvFitRule(LocalSpillRule):
    """Engines that fit, then spill, then engines whose state is unknown (stale) as a last resort (an
    engine whose server refuses connections is down, not unknown: skipped); when every engine is
    known not to fit and there is no spill: refused — 503 + Retry-After while it is full, 400 when
    the request is larger than its context or whole KV pool."""

    strategy: Literal["kv_fit"]


class EngineFit(NamedTuple):
    """How one engine stands for this request (immutable; a NamedTuple: one is built per engine per
    request, in a third of a frozen dataclass's time)."""

    backend: str
    key: tuple[int, float] | None  # sort key when it fits, else None
    note: str
    short_blocks: int = 0
    unknown: bool = False  # no fresh state: not trusted, kept only as a last resort
    never: bool = False  # larger than the engine's context or its whole KV pool: waiting will not help
    yielded: bool = False  # fits, but left to teams under their share of it (fairness): spill, else wait


def engine_fit(ctx: Context, backend: str, max_waiting: int | None) -> EngineFit:
    """How `backend` stands for this request; `max_waiting`: the rule's queue limit (None: the backend's)."""
    live, facts = ctx.live, ctx.facts
    if live.health_of(backend).state == "open":  # (is_open, inline: once per engine per request)
        return EngineFit(backend, None, closed_note(ctx, backend))
    snap, free = live.engine(backend), live.free_blocks(backend)
    need = facts.blocks_needed.get(backend)
    if snap is None or free is None or need is None:
        return EngineFit(backend, None, f"{backend}: state unknown", unknown=True)
    context_len = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens) + \
        facts.output_tokens_by_backend.get(backend, facts.expected_output_tokens)  # facts.output_on, inline
    if snap.max_model_len and context_len > snap.max_model_len:
        return EngineFit(backend, None, f"{backend}: {context_len} tokens exceed its context of {snap.max_model_len}",
                   never=True)
    if need > snap.num_blocks_total:
        return EngineFit(backend, None, f"{backend}: needs {need} KV blocks, its whole pool has {snap.num_blocks_total}",
                   never=True)
    if need > free:
        return EngineFit(backend, None, f"{backend}: needs {need} KV blocks, {free} free", need - free)
    # The queue as we know it: the polled one corrected by what this gateway sent since (live.num_waiting).
    queued = live.num_waiting(backend) or 0
    limit = max_waiting if max_waiting is not None else ctx.policy.policy.backends[backend].max_waiting
    if queued > limit:
        return EngineFit(backend, None, f"{backend}: queue {queued} > {limit}")
    if snap.max_waiting and queued >= snap.max_waiting:  # it would refuse the request (503): do not try
        return EngineFit(backend, None, f"{backend}: queue {queued} at the engine's limit of {snap.max_waiting}")
    fair = fair_share(ctx, backend, queued, limit, free, need, snap.num_blocks_total)
    if fair is not None:
        return EngineFit(backend, None, f"{backend}: yields, {fair.note}", yielded=True)
    # Fewest queued requests first (a queue is latency), then the largest share of KV left after this one.
    key = (queued, -(free - need) / snap.num_blocks_total)
    return EngineFit(backend, key, f"{backend}: fits ({need} of {free} free blocks, {queued} waiting)")


def kv_fit(rule: LocalSpillRule, ctx: Context) -> Outcome | None:
    """Engines that fit (fewest waiting, then most KV left), then spill, then engines whose state
    is unknown (stale or not yet polled) as a last resort; engines known not to fit are left out."""
    return kv_fit_with_fits(rule, ctx)[0]


def kv_fit_with_fits(rule: LocalSpillRule, ctx: Context) -> tuple[Outcome | None, list[EngineFit]]:
    """kv_fit's outcome and the EngineFit of each of the rule's usable engines behind it (prefix_affinity
    reorders the engines that fit without judging each engine a second time)."""
    local = [b for b in rule.local if b in ctx.usable]
    spill = [b for b in rule.spill if b in ctx.usable and not is_open(ctx, b)]
    if not local and not spill:
        return None, []
    fits = [engine_fit(ctx, b, rule.max_waiting) for b in local]
    return _outcome(rule, ctx, local, spill, fits), fits


def _notes(fits: list[EngineFit]) -> str:
    return "; ".join(f.note for f in fits)


def _outcome(rule: LocalSpillRule, ctx: Context, local: list[str], spill: list[str], fits: list[EngineFit]) -> Outcome:
    """The order (or refusal) from the engines' fits and the usable spill targets."""
    fitting = [f.backend for f in sorted((f for f in fits if f.key is not None), key=lambda f: f.key or (0, 0.0))]
    unknown = [f.backend for f in fits if f.unknown]
    yielded = [f.backend for f in fits if f.yielded] if spill else []  # no spill: it waits (503 + Retry-After)
    backends = (*fitting, *spill, *unknown, *yielded)
    # Routed: the reason is formatted only if read (policies/lazy_text.py); refusals below are read at once.
    if fitting:
        return Outcome(backends, later(lambda: f"local fits: {_notes(fits)}"))
    if spill:
        return Outcome(backends, later(
            lambda: f"spill to {', '.join(spill)}: {_notes(fits) or 'no local engine for this model'}"))
    if unknown:
        return Outcome(backends, later(
            lambda: f"nothing known to fit, trying {', '.join(unknown)} anyway: {_notes(fits)}"))
    notes = _notes(fits)
    if fits and all(f.never for f in fits) and not any(b in ctx.usable for b in rule.spill):
        return Outcome((), f"too large for every engine and nowhere to spill: {notes}", "too_large")
    if local and all(is_open(ctx, b) for b in local):  # decide() refuses them with their cooldown
        return Outcome(tuple(local), f"nowhere to go: {notes}")
    short = max((f.short_blocks for f in fits), default=0)
    from policies.estimator import retry_after_s  # cold path; estimator imports the schema

    wait = retry_after_s(short, ctx.live.engine(local[0]), ctx.policy.policy.defaults.retry_after_s)
    return Outcome((), f"no capacity and nowhere to spill: {notes}", "no_capacity", wait)
