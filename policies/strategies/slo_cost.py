"""slo_cost: the cheapest candidate whose predicted TTFT p95 meets the SLO (the team's, else the
rule's) with a margin, else the fastest; with hysteresis, so that a prediction hovering at the SLO
does not flip traffic between local and hosted on every request."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import Field

from policies.lazy_text import later
from policies.rule_schema import RuleBase
from policies.strategies.base import Context, Outcome, closed_note
from policies.strategies.kv_fit import EngineFit, engine_fit
from policies.strategies.ttft import hosted_ttft, predict_ttft


class SloCostRule(RuleBase):
    """A candidate meets the SLO while its predicted p95 ≤ SLO × (1 − margin); once it has missed,
    it meets again only below SLO × (1 − margin) × (1 − hysteresis)."""

    target_fields: ClassVar[tuple[str, ...]] = ("candidates",)
    required_targets: ClassVar[str] = "candidates"
    slo_fields: ClassVar[tuple[str, ...]] = ("slo",)

    strategy: Literal["slo_cost"]
    candidates: list[str] = Field(min_length=1)
    slo: str | None = None  # from `slos`; a team's own `slo` wins; neither: cheapest first
    margin: float = Field(default=0.1, ge=0.0, lt=1.0)
    hysteresis: float = Field(default=0.2, ge=0.0, lt=1.0)
    # Engines: a queue longer than this skips them. Default none: the queue is in the predicted TTFT
    # (the engine's own refusal limit still applies), so a team with a relaxed SLO may wait longer.
    max_waiting: int | None = Field(default=None, ge=0)

    def warnings(self, policy: Any) -> list[tuple[str, str]]:
        if self.slo is not None or (policy.teams and all(t.slo for t in policy.teams.values())):
            return []
        return [("strategy", "slo_cost without `slo`: teams with no slo of their own are routed by cost alone")]


_NO_QUEUE_LIMIT = 1 << 30
_UNPRICED = float("inf")


def still_out(was_out: bool, ttft_s: float, limit_s: float, hysteresis: float) -> bool:
    """The hysteresis: out above `limit_s`; once out, back in only below limit_s × (1 − hysteresis)."""
    return ttft_s > (limit_s * (1.0 - hysteresis) if was_out else limit_s)


class _Scored(NamedTuple):  # per candidate per request: a NamedTuple costs half a frozen dataclass
    backend: str
    ttft_s: float | None
    cost: float
    source: str  # the prediction's source (live, p95, …) for the reason
    model_s: float | None  # engines: the performance model's figure before the learned scale


class _Tally:
    """The candidates sorted into meeting / missing / unknown, and what the reason says of each: a
    candidate left out (its note), or a scored one with its mark (in, out, held) — formatted only
    when the reason is read (one tally per request; a slotted class builds in half a dataclass's time)."""

    __slots__ = ("meeting", "missing", "unknown", "notes", "changes", "never")

    def __init__(self) -> None:
        self.meeting: list[_Scored] = []
        self.missing: list[_Scored] = []
        self.unknown: list[_Scored] = []
        self.notes: list[str | EngineFit | tuple[_Scored, str]] = []
        self.changes: list[tuple[tuple[str, float], bool]] = []
        self.never = 0  # engines the request can never fit (context or whole pool)

    def order(self) -> tuple[str, ...]:
        """Meeting by cost then TTFT, then missing by TTFT, then unknown."""
        meeting = self.meeting
        if len(meeting) == 1:  # the common case: nothing to sort
            out = [meeting[0].backend]
        else:
            out = [s.backend for s in sorted(meeting, key=_by_cost)]
        if self.missing:
            out += [s.backend for s in sorted(self.missing, key=_by_ttft)]
        if self.unknown:
            out += [s.backend for s in self.unknown]
        return tuple(out)

    def text(self) -> str:
        """The notes, in candidate order, as the reason shows them."""
        return "; ".join([_note_text(n) for n in self.notes])


def _note_text(note: str | EngineFit | tuple[_Scored, str]) -> str:
    if isinstance(note, str):
        return note
    if isinstance(note, EngineFit):
        return note.note
    scored, mark = note
    ttft = scored.ttft_s
    head = f"{scored.backend}: ttft p95 ?, ${scored.cost:.3g}" if ttft is None else \
        f"{scored.backend}: ttft p95 {ttft:.3g}s {scored.source}, ${scored.cost:.3g}"
    return head + mark


def _by_cost(s: _Scored) -> tuple[float, float]:
    return s.cost, s.ttft_s or 0.0


def _by_ttft(s: _Scored) -> float:
    return s.ttft_s or 0.0


def _slo_s(rule: SloCostRule, ctx: Context) -> float | None:
    name = ctx.policy.team(ctx.facts.team).slo or rule.slo
    slo = ctx.policy.policy.slos.get(name) if name else None
    return slo.ttft_p95_s if slo is not None else None


def _plan(rule: SloCostRule, ctx: Context) -> tuple[tuple[str, ...], float | None]:
    """The candidates the team may use and its SLO: fixed for the compiled policy, read once per
    (rule, team, usable backends); the rule is kept beside them (an id is unique only while it lives)."""
    memo, key = ctx.policy.memo, ("slo_cost", id(rule), ctx.facts.team, ctx.usable)
    found = memo.get(key)
    if found is None or found[0] is not rule:
        found = memo[key] = (rule, tuple(b for b in rule.candidates if b in ctx.usable), _slo_s(rule, ctx))
    return found[1], found[2]


def _score(rule: SloCostRule, ctx: Context, backend: str, tally: _Tally) -> _Scored | None:
    """The backend's predicted TTFT and cost; None (and a note) when it is left out."""
    if backend in ctx.policy.engines:
        fit = engine_fit(ctx, backend, rule.max_waiting if rule.max_waiting is not None else _NO_QUEUE_LIMIT)
        if fit.key is None and not fit.unknown:
            tally.notes.append(fit)
            tally.never += fit.never
            return None
        predicted = predict_ttft(ctx, backend)
        cost = ctx.facts.est_cost_usd.get(backend, 0.0)  # an engine with no price is already paid for
    else:
        health = ctx.live.health_of(backend)
        if health.state == "open":
            tally.notes.append(closed_note(ctx, backend))
            return None
        predicted = hosted_ttft(ctx, backend, health)
        cost = ctx.facts.est_cost_usd.get(backend, _UNPRICED)  # a hosted model with no price sorts last
    return _Scored(backend, predicted.ttft_s, cost, predicted.source, predicted.model_s)


def _place(rule: SloCostRule, ctx: Context, scored: _Scored, slo: float | None, tally: _Tally) -> None:
    ttft = scored.ttft_s
    if ttft is None:  # no fresh state: a last resort, as in kv_fit
        tally.unknown.append(scored)
        tally.notes.append((scored, ""))
        return
    if slo is None:
        tally.meeting.append(scored)
        tally.notes.append((scored, ""))
        return
    limit = slo * (1.0 - rule.margin)
    key = (scored.backend, slo)
    was_out = key in ctx.live.slo_out
    out = still_out(was_out, ttft, limit, rule.hysteresis)
    if out != was_out:
        tally.changes.append((key, out))
    if out:
        tally.missing.append(scored)
        # held: within the bound, but not yet back below it by the hysteresis
        tally.notes.append((scored, " (out, held)" if ttft <= limit else " (out)"))
    else:
        tally.meeting.append(scored)
        tally.notes.append((scored, " (in)"))


def _head(rule: SloCostRule, slo: float | None, any_meets: bool) -> str:
    if slo is None:
        return "no slo for this team or rule; cheapest first"
    bound = _bound_text(slo, rule.margin, rule.hysteresis)
    return f"cheapest with {bound}" if any_meets else f"none meets {bound}; fastest first"


@lru_cache(maxsize=256)  # a handful of (slo, margin, hysteresis) per policy: formatted once, not per request
def _bound_text(slo: float, margin: float, hysteresis: float) -> str:
    limit = slo * (1.0 - margin)
    back = limit * (1.0 - hysteresis)
    return f"ttft p95 ≤ {limit:.3g}s (slo {slo:g}s − {margin:.0%}; once out, back below {back:.3g}s)"


def slo_cost(rule: SloCostRule, ctx: Context) -> Outcome | None:
    candidates, slo = _plan(rule, ctx)
    if not candidates:
        return None
    tally = _Tally()
    predicted = []
    for backend in candidates:
        scored = _score(rule, ctx, backend, tally)
        if scored is not None:
            _place(rule, ctx, scored, slo, tally)
            if scored.model_s is not None:
                predicted.append((backend, scored.model_s))
    backends, changes = tally.order(), tuple(tally.changes)
    if not backends and tally.never == len(candidates):
        return Outcome((), later(lambda: f"too large for every candidate: {tally.text()}"), "too_large")
    # The reason is read by refusals, traces and explain, not by routing: built when read.
    reason = later(lambda: f"{_head(rule, slo, bool(tally.meeting))}: {tally.text()}")
    if not backends:
        return Outcome((), reason, "no_capacity", ctx.policy.policy.defaults.retry_after_s, changes)
    return Outcome(backends, reason, slo_out=changes, predicted=tuple(predicted))
