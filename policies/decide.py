"""The routing decision: a pure function of (compiled policy, request facts, live state).

Rules are tried in order; the first that matches and can serve the model decides. Shadow rules
that match are recorded on the decision and never applied. With no rule, the alias's own
deployment order is used. The team's `allowed_backends` bound every outcome; open circuits are
dropped from it, and so are engines that cannot give the structured output a request asks for.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.compiled import AliasInfo, CompiledPolicy, CompiledRule
from policies.conditions import Condition
from policies.decision import RequestFacts, RouteDecision, Target
from policies.lazy_text import later
from policies.live import LiveState
from policies.strategies import Context, Outcome
from policies.structured_output import pass_over

DEFAULT_RULE = "default"
Shown = Sequence[tuple[Condition, Any]]  # the conditions that held, with their values
_ALWAYS: Shown = ()  # a rule without `when` (immutable: shared by every such decision)


def _matched(rule: CompiledRule, facts: RequestFacts, live: LiveState) -> Shown | None:
    """The conditions with the values that made them hold, or None when one does not hold."""
    shown = []
    for cond in rule.conditions:
        value = cond.get(facts, live)
        if not cond.test(value):
            return None
        shown.append((cond, value))
    return shown


def _why(shown: Shown) -> str:
    """The reason's account of the conditions that held (a rule without `when`: "always")."""
    text = " & ".join([cond.label if cond.fact in ("any", "now") or "." in cond.fact
                       else f"{cond.label} ({value})" for cond, value in shown])
    return text or "always"


def _without_open(ctx: Context, outcome: Outcome) -> Outcome:
    live = ctx.live
    if not live.any_open(outcome.backends):  # nearly every decision: nothing to drop
        return outcome
    kept = [b for b in outcome.backends if live.health_of(b).state != "open"]
    if kept or not outcome.backends:
        return outcome if len(kept) == len(outcome.backends) else \
            Outcome(tuple(kept), later(lambda: outcome.reason), slo_out=outcome.slo_out,
                    predicted=outcome.predicted)
    wait = min(live.health_of(b).retry_at for b in outcome.backends) - live.now
    floor = ctx.policy.policy.defaults.retry_after_s
    down = "unreachable or cooling down" if any(live.health_of(b).unreachable for b in outcome.backends) \
        else "cooling down"
    return Outcome((), later(lambda: f"{outcome.reason}; every target is {down}"), "no_healthy_backend",
                   max(floor, wait), outcome.slo_out)


def apply_slo_out(out: frozenset[tuple[str, float]],
                  changes: tuple[tuple[tuple[str, float], bool], ...]) -> frozenset[tuple[str, float]]:
    """slo_cost's hysteresis state after a decision's changes (see LiveState.slo_out)."""
    now = set(out)
    for key, is_out in changes:
        (now.add if is_out else now.discard)(key)
    return frozenset(now)


def _targets(alias: AliasInfo, backends: tuple[str, ...]) -> tuple[Target, ...]:
    return tuple([alias.by_backend[b] for b in backends])  # a list is built faster than a generator is run


def decide(compiled: CompiledPolicy, facts: RequestFacts, live: LiveState) -> RouteDecision:
    """Reasons are built when read (policies/lazy_text.py): routing never reads them."""
    alias = compiled.aliases.get(facts.model_alias)
    if alias is None:
        return RouteDecision((), "", f"unknown model alias {facts.model_alias!r}", refusal="not_allowed")
    usable = compiled.usable(alias, facts.team)
    if not usable:
        reason = f"team {facts.team!r} may use none of the backends serving {alias.name!r}"
        return RouteDecision((), DEFAULT_RULE, reason, strategy="default", refusal="not_allowed")
    ctx = Context(compiled, alias, facts, live, usable)
    shadow: tuple[str, Outcome, Shown] | None = None
    for rule in compiled.rules:
        shown = _matched(rule, facts, live) if rule.conditions else _ALWAYS
        if shown is None:
            continue
        outcome = rule.strategy(rule.spec, ctx)
        if outcome is None:  # none of the rule's backends serves this model for this team
            continue
        outcome = _without_open(ctx, pass_over(ctx, outcome))  # an engine passed over: its circuit is moot
        if rule.shadow:
            shadow = shadow or (rule.name, outcome, shown)
            continue
        return _decision(alias, rule.name, rule.spec.strategy, outcome, shown, shadow)
    backends = tuple(t.backend for t in alias.targets if t.backend in usable)
    order = Outcome(tuple(dict.fromkeys(backends)), later(lambda: "alias order " + ", ".join(backends)))
    outcome = _without_open(ctx, pass_over(ctx, order))
    return _decision(alias, DEFAULT_RULE, "default", outcome, None, shadow)


def _decision(alias: AliasInfo, rule: str, strategy: str, outcome: Outcome,
              shown: Shown | None,
              shadow: tuple[str, Outcome, Shown] | None) -> RouteDecision:
    """`shown`: the deciding rule's conditions as they held (None: no rule matched)."""
    if shown is None:
        reason = later(lambda: f"no rule matched → {outcome.reason}")
    else:
        reason = later(lambda: f"{rule}: {_why(shown)} → {outcome.reason}")
    if shadow is None:
        return RouteDecision(_targets(alias, outcome.backends), rule, reason, "", (), strategy,
                             outcome.refusal, outcome.retry_after_s, "", outcome.slo_out, outcome.predicted)
    name, other, other_shown = shadow
    return RouteDecision(
        targets=_targets(alias, outcome.backends), rule=rule, reason=reason, shadow_rule=name,
        shadow_targets=_targets(alias, other.backends), strategy=strategy, refusal=outcome.refusal,
        retry_after_s=outcome.retry_after_s, shadow_reason=f"{name}: {_why(other_shown)} → {other.reason}",
        slo_out=outcome.slo_out, predicted_ttft=outcome.predicted,
    )
