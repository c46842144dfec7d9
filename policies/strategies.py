"""How a matched rule orders its backends: first_match (as written), kv_fit (engines that fit, most
headroom first, then spill), cheapest_within_slo and quality_floor (hard requests skip the local model).
Pure functions over one request's context."""
from __future__ import annotations

from dataclasses import dataclass

from policies.compiled import AliasInfo, CompiledPolicy
from policies.decision import RequestFacts
from policies.estimator import retry_after_s
from policies.live import LiveState
from policies.rule_schema import Rule


@dataclass(frozen=True, slots=True)
class Context:
    policy: CompiledPolicy
    alias: AliasInfo
    facts: RequestFacts
    live: LiveState
    usable: frozenset[str]  # backends with a deployment of the alias that the team may use


@dataclass(frozen=True, slots=True)
class Outcome:
    backends: tuple[str, ...]
    reason: str
    refusal: str = ""
    retry_after_s: float = 0.0


def _is_open(ctx: Context, backend: str) -> bool:
    return ctx.live.health_of(backend).state == "open"


def _closed_note(ctx: Context, backend: str) -> str:
    return f"{backend}: {'unreachable' if ctx.live.health_of(backend).unreachable else 'circuit open'}"


def first_match(rule: Rule, ctx: Context) -> Outcome | None:
    backends = tuple(b for b in rule.route if b in ctx.usable)
    return Outcome(backends, "route " + ", ".join(backends)) if backends else None


@dataclass(frozen=True, slots=True)
class Fit:
    """How one engine stands for this request."""

    backend: str
    key: tuple[int, float] | None  # sort key when it fits, else None
    note: str
    short_blocks: int = 0
    unknown: bool = False  # no fresh state: not trusted, kept only as a last resort
    never: bool = False  # larger than the engine's context or its whole KV pool: waiting will not help


def _engine_fit(rule: Rule, ctx: Context, backend: str) -> Fit:
    live, facts = ctx.live, ctx.facts
    if _is_open(ctx, backend):
        return Fit(backend, None, _closed_note(ctx, backend))
    snap, free = live.engine(backend), live.free_blocks(backend)
    need = facts.blocks_needed.get(backend)
    if snap is None or free is None or need is None:
        return Fit(backend, None, f"{backend}: state unknown", unknown=True)
    context_len = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens) + facts.output_on(backend)
    if snap.max_model_len and context_len > snap.max_model_len:
        return Fit(backend, None, f"{backend}: {context_len} tokens exceed its context of {snap.max_model_len}",
                   never=True)
    if need > snap.num_blocks_total:
        return Fit(backend, None, f"{backend}: needs {need} KV blocks, its whole pool has {snap.num_blocks_total}",
                   never=True)
    if need > free:
        return Fit(backend, None, f"{backend}: needs {need} KV blocks, {free} free", need - free)
    # The queue as we know it: the polled one corrected by what this gateway sent since (live.num_waiting).
    queued = live.num_waiting(backend) or 0
    limit = rule.max_waiting if rule.max_waiting is not None else ctx.policy.policy.backends[backend].max_waiting
    if queued > limit:
        return Fit(backend, None, f"{backend}: queue {queued} > {limit}")
    if snap.max_waiting and queued >= snap.max_waiting:  # it would refuse the request (503): do not try
        return Fit(backend, None, f"{backend}: queue {queued} at the engine's limit of {snap.max_waiting}")
    # Fewest queued requests first (a queue is latency), then the largest share of KV left after this one.
    key = (queued, -(free - need) / snap.num_blocks_total)
    return Fit(backend, key, f"{backend}: fits ({need} of {free} free blocks, {queued} waiting)")


def kv_fit(rule: Rule, ctx: Context) -> Outcome | None:
    """Engines that fit (fewest waiting, then most KV left), then spill, then engines whose state
    is unknown (stale or not yet polled) as a last resort; engines known not to fit are left out."""
    local = [b for b in rule.local if b in ctx.usable]
    spill = [b for b in rule.spill if b in ctx.usable and not _is_open(ctx, b)]
    if not local and not spill:
        return None
    fits = [_engine_fit(rule, ctx, b) for b in local]
    fitting = [f.backend for f in sorted((f for f in fits if f.key is not None), key=lambda f: f.key or (0, 0.0))]
    unknown = [f.backend for f in fits if f.unknown]
    notes = "; ".join(f.note for f in fits)
    backends = (*fitting, *spill, *unknown)
    if fitting:
        return Outcome(backends, f"local fits: {notes}")
    if spill:
        return Outcome(backends, f"spill to {', '.join(spill)}: {notes or 'no local engine for this model'}")
    if unknown:
        return Outcome(backends, f"nothing known to fit, trying {', '.join(unknown)} anyway: {notes}")
    if fits and all(f.never for f in fits) and not any(b in ctx.usable for b in rule.spill):
        return Outcome((), f"too large for every engine and nowhere to spill: {notes}", "too_large")
    if local and all(_is_open(ctx, b) for b in local):  # decide() refuses them with their cooldown
        return Outcome(tuple(local), f"nowhere to go: {notes}")
    short = max((f.short_blocks for f in fits), default=0)
    wait = retry_after_s(short, ctx.live.engine(local[0]), ctx.policy.policy.defaults.retry_after_s)
    return Outcome((), f"no capacity and nowhere to spill: {notes}", "no_capacity", wait)


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
        queued = ctx.live.num_waiting(backend) or 0
        modelled = (uncached + queued * prompt) / snap.prefill_tokens_per_s
    known = [v for v in (observed, modelled) if v is not None]
    return max(known) if known else ctx.policy.policy.backends[backend].expected_ttft_s


def _show(value: float | None, fmt: str) -> str:
    return "?" if value is None else fmt.format(value)


def cheapest_within_slo(rule: Rule, ctx: Context) -> Outcome | None:
    candidates = [b for b in rule.candidates if b in ctx.usable]
    if not candidates:
        return None
    slo = ctx.policy.policy.slos[rule.slo or ""].ttft_p95_s
    meeting: list[tuple[float, str]] = []
    missing: list[tuple[float, str]] = []
    notes: list[str] = []
    unknown: list[str] = []
    never = 0
    for backend in candidates:
        if backend in ctx.policy.engines:
            fit = _engine_fit(rule, ctx, backend)
            if fit.key is None:
                notes.append(fit.note)
                unknown += [backend] if fit.unknown else []
                never += fit.never
                continue
        elif _is_open(ctx, backend):
            notes.append(_closed_note(ctx, backend))
            continue
        ttft = _predicted_ttft(ctx, backend)
        cost = ctx.facts.est_cost_usd.get(backend)
        notes.append(f"{backend}: ttft {_show(ttft, '{:.3g}s')}, {_show(cost, '${:.3g}')}")
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


def quality_floor(rule: Rule, ctx: Context) -> Outcome | None:
    """Easy (difficulty ≤ max_difficulty): as kv_fit — local if it fits, else spill. Hard, or not
    scored: spill only; local after it only when the rule says `hard_to_local`."""
    score, floor = ctx.facts.difficulty, rule.max_difficulty if rule.max_difficulty is not None else 1.0
    if score is not None and score <= floor:
        easy = kv_fit(rule, ctx)
        return None if easy is None else Outcome(easy.backends, f"difficulty {score:.2f} ≤ {floor:g}: {easy.reason}",
                                                 easy.refusal, easy.retry_after_s)
    why = f"difficulty {score:.2f} > {floor:g}" if score is not None else "difficulty not scored"
    hosted = tuple(b for b in rule.spill if b in ctx.usable)  # open circuits: decide() drops them, or refuses
    if rule.hard_to_local:
        local = kv_fit(rule.model_copy(update={"spill": []}), ctx)
        fallback = local.backends if local is not None else ()
        if not hosted and local is not None and not fallback:
            return Outcome((), f"{why}, no hosted backend: {local.reason}", local.refusal, local.retry_after_s)
        backends = (*hosted, *fallback)
        return Outcome(backends, f"{why}: {', '.join(backends)} (local allowed as fallback)") if backends else None
    if hosted:
        return Outcome(hosted, f"{why}: hosted {', '.join(hosted)}")
    if not any(b in ctx.usable for b in rule.local):
        return None
    return Outcome((), f"{why}: no hosted backend for this team, and the rule keeps hard requests off the local "
                       "model (hard_to_local: false)", "not_allowed")


STRATEGIES = {"first_match": first_match, "kv_fit": kv_fit, "cheapest_within_slo": cheapest_within_slo,
              "quality_floor": quality_floor}
