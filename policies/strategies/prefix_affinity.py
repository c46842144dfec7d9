"""prefix_affinity: kv_fit over a pool of engines serving one model, with the engines that fit ordered
by where the prompt's prefix is cached against their load (policies.prefix_affinity); `balance`
swaps in least-loaded or round-robin for comparison. Engines without a prefix index score on load."""
from __future__ import annotations

from itertools import takewhile
from typing import Any, ClassVar, Literal

from pydantic import Field

from policies.lazy_text import later
from policies.prefix_affinity import (
    LOAD_TOKENS,
    PoolMember,
    by_affinity,
    describe,
    least_loaded,
    requests_on,
    round_robin,
)
from policies.strategies.base import Context, Outcome
from policies.strategies.kv_fit import LocalSpillRule, kv_fit_with_fits


class PrefixAffinityRule(LocalSpillRule):
    """`local`: the pool (engines serving the alias); `spill`, `max_waiting` as kv_fit.
    `balance`: `prefix` (fewest prompt tokens to compute: uncached prompt + `load_tokens` per request
    on the engine), `least_loaded` or `round_robin`."""

    uses_prefix_index: ClassVar[bool] = True

    strategy: Literal["prefix_affinity"]
    balance: Literal["prefix", "least_loaded", "round_robin"] = "prefix"
    load_tokens: float = Field(default=LOAD_TOKENS, ge=0)  # what a request running or queued there costs

    def warnings(self, policy: Any) -> list[tuple[str, str]]:
        out = []
        if len(set(self.local)) < 2:
            out.append(("local", "prefix_affinity over one engine has nothing to choose: kv_fit does the same"))
        if self.balance == "prefix" and not any(policy.backends[b].state_source == "hybridgw"
                                                for b in self.local if b in policy.backends):
            out.append(("local", "no engine here reports its prefix cache (state: hybridgw): load-only scoring"))
        return out


def _member(ctx: Context, backend: str) -> PoolMember:
    facts = ctx.facts
    return PoolMember(backend, facts.prefix_match.get(backend, 0.0), requests_on(ctx.live, backend),
                      facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens),
                      ctx.live.prefix_occupancy.get(backend, 0.0))


def _order(rule: PrefixAffinityRule, members: list[PoolMember], turn: int) -> tuple[list[PoolMember], str]:
    if rule.balance == "round_robin":
        return round_robin(members, turn), f"round-robin turn {turn}"
    if rule.balance == "least_loaded":
        ordered = least_loaded(members)
        return ordered, f"least loaded: {describe(ordered, None)}"
    ordered = by_affinity(members, rule.load_tokens)
    return ordered, f"prefix affinity: {describe(ordered, rule.load_tokens)}"


def prefix_affinity(rule: PrefixAffinityRule, ctx: Context) -> Outcome | None:
    """kv_fit's outcome (engines that fit, then spill, then unknown; or its refusal), with the
    engines that fit reordered by the rule's `balance`."""
    outcome, fits = kv_fit_with_fits(rule, ctx)
    if outcome is None or not outcome.backends:
        return outcome
    fitting = {f.backend for f in fits if f.key is not None}
    head = list(takewhile(fitting.__contains__, outcome.backends))  # kv_fit lists the engines that fit first
    if not head:
        return outcome
    pool = [b for b in dict.fromkeys(rule.local) if b in head]  # the rule's order: ties and round-robin's turns
    ordered, note = _order(rule, [_member(ctx, b) for b in pool], ctx.live.turn)
    backends = (*(m.backend for m in ordered), *outcome.backends[len(head):])
    reason = later(lambda: f"{note}; {outcome.reason}")
    return Outcome(backends, reason, outcome.refusal, outcome.retry_after_s, outcome.slo_out)
