"""PolicyRouter: the one object the gateway holds to route requests by policy.

    router = PolicyRouter(loaded_policy, engine_urls={"local": "http://127.0.0.1:8100/v1"})
    await router.start()                        # polls engine state ~4×/s; await router.stop() at shutdown
    reloader = PolicyReloader(path, router.reload); await reloader.start()   # file change + SIGHUP

    # per request (build_facts and route are sync, pure CPU: ~0.1 ms for a 1k-token prompt)
    pinned = router.compiled                    # one policy for this request's whole life
    facts = router.build_facts(body, team, headers=request.headers, compiled=pinned)
    decision = router.route(facts, compiled=pinned)   # targets, rule, reason, strategy, refusal
    for target in decision.targets:             # try in order; next one on failure before first byte
        hold = router.reserve(target.backend, facts)  # KV blocks held while in flight (None: hosted)
        try: ...; router.record_result(target.backend, ok=True, ttft_s=ttft)  # at the first byte
        except <connect error, 5xx, 429, first-token timeout>: router.record_result(target.backend, ok=False)
        finally: router.release(hold)           # when the request ends (done, failed or aborted)
    router.record_usage(facts, target, prompt_tokens=upstream_prompt_or_None, completion_tokens=n)

Headers/trace: `x-hybridgw-route-rule: decision.rule`; log/trace `decision.reason`, and
`decision.shadow_rule` / `shadow_targets` / `shadow_reason` when a shadow rule or policy matched.
No targets: `decision.refusal` says why — "no_capacity" / "no_healthy_backend" → 503 with
Retry-After `ceil(decision.retry_after_s)`; "not_allowed" → 403; "too_large" (bigger than every
engine's context or KV pool, nowhere to spill) → 400 context_length_exceeded. build_facts raises RoutingError
(code "model_not_found" → 400/404, "model_not_allowed" → 403). Budgets with `on_exceed: route`:
when the limiter refuses a USD limit, build the facts again with `over_budget=True` and route.
The cost to reserve against limits: `facts.est_cost_usd.get(decision.targets[0].backend, 0.0)`.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from policies.calibration import Calibration
from policies.compiled import CompiledPolicy, compile_policy
from policies.decide import apply_slo_out, decide
from policies.decision import RequestFacts, RouteDecision, Target
from policies.estimator import TokenPrice, litellm_price_table, local_price
from policies.facts import PromptScores, build_facts, calibration_key, score_prompt
from policies.fairness import CLASS_HEADER, DemandBook, request_class
from policies.health import HealthBook
from policies.holds import Hold, HoldBook
from policies.live import LiveState
from policies.loader import LoadedPolicy
from policies.output_stats import OutputStats
from policies.prefix_tracker import PrefixTracker
from policies.quality.lazy import LazyQuality
from policies.schema import Policy
from policies.state import EngineStatePoller, state_sources
from policies.tokens import TokenCounter
from policies.ttft_scale import TtftScale

log = logging.getLogger("hybridgw.policy")
__all__ = ["Hold", "PolicyRouter"]


def _compile(policy: Policy | LoadedPolicy, table: Mapping[str, Any]) -> CompiledPolicy:
    if isinstance(policy, LoadedPolicy):
        return compile_policy(policy.policy, table, policy.source, policy.absent_backends,
                              perf_model=policy.perf_model)
    return compile_policy(policy, table)


class PolicyRouter:
    def __init__(self, policy: Policy | LoadedPolicy, *, engine_urls: Mapping[str, str] | None = None,
                 shadow: Policy | LoadedPolicy | None = None, price_table: Mapping[str, Any] | None = None,
                 counter: TokenCounter | None = None, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._prices = litellm_price_table() if price_table is None else price_table  # read once (~40 ms)
        self._compiled = _compile(policy, self._prices)
        self._shadow = _compile(shadow, self._prices) if shadow is not None else None
        self.engine_urls = dict(engine_urls or {})
        self.clock, self.wall_clock = clock, wall_clock
        self.counter = counter or TokenCounter()
        self.counter.warm({a.encoding for a in self._compiled.aliases.values()})
        self.calibration = Calibration()
        self.outputs = OutputStats()
        settings = self._compiled.policy.health
        self.health = HealthBook(self._compiled.policy.backends, settings)
        self.poller = EngineStatePoller(state_sources(self._compiled.policy, self.engine_urls),
                                        settings.poll_interval_s, clock=clock)
        self.holds = HoldBook()
        self.slo_out: frozenset[tuple[str, float]] = frozenset()  # see LiveState.slo_out
        self.demand = DemandBook()  # which teams asked for which engines lately (team fairness)
        self.prefixes = PrefixTracker()  # what we sent to which engine, for prefix_affinity
        self.turns = 0  # decisions taken: round-robin's turn (LiveState.turn)
        self.ttft_scale = TtftScale(settings.ttft_ewma_alpha)  # see LiveState.ttft_scale
        self.quality = LazyQuality()  # loads the model (~0.5 s) only for a policy that uses it
        if self._compiled.uses_difficulty or self._compiled.uses_category:
            self.quality.warm(self._compiled.policy.categories)

    @property
    def compiled(self) -> CompiledPolicy:
        return self._compiled

    @property
    def policy(self) -> Policy:
        return self._compiled.policy

    async def start(self) -> None:
        await self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()

    def set_engine_url(self, backend: str, url: str) -> None:
        """Tell the router where a spawned (or restarted) engine listens."""
        self.engine_urls[backend] = url
        self.poller.set_sources(state_sources(self.policy, self.engine_urls))

    def live_state(self) -> LiveState:
        now = self.clock()
        snapshots = self.poller.snapshots
        return LiveState(now, snapshots, self.health.view(now), self.holds.reserved(),
                         self._compiled.policy.health.stale_after_s, self.poller.unreachable,
                         self.holds.released_since(snapshots), self.holds.in_flight(snapshots), self.slo_out,
                         teams=self.demand.view(self.holds.by_team(), now,
                                                self._compiled.policy.fairness.demand_window_s),
                         turn=self.turns, prefix_occupancy=self.prefixes.occupancy(self._compiled.engines),
                         ttft_scale=self.ttft_scale.scales(now))

    def build_facts(self, body: Mapping[str, Any], team: str, *, headers: Mapping[str, str] | None = None,
                    over_budget: bool = False, compiled: CompiledPolicy | None = None,
                    live: LiveState | None = None, prompt_tokens: int | None = None,
                    scores: PromptScores | None = None) -> RequestFacts:
        compiled, live = compiled or self._compiled, live or self.live_state()
        facts = build_facts(compiled, body, team, live,
                            counter=self.counter, calibration=self.calibration, headers=headers,
                            team_p90=self.outputs.p90(team), over_budget=over_budget, now_unix=self.wall_clock(),
                            prompt_tokens=prompt_tokens, difficulty=self.quality,
                            category=self.quality.category, scores=scores)
        if any(rule.spec.uses_prefix_index for rule in compiled.rules):
            facts = self.prefixes.annotate(facts, body, compiled, live)
        return facts

    def score(self, body: Mapping[str, Any], compiled: CompiledPolicy | None = None) -> PromptScores:
        """The prompt's difficulty and category where the policy uses them (thread-safe: e.g. in the
        worker thread that counts a large prompt)."""
        return score_prompt(compiled or self._compiled, body, self.quality, self.quality.category)

    def route(self, facts: RequestFacts, *, compiled: CompiledPolicy | None = None,
              live: LiveState | None = None) -> RouteDecision:
        live = live or self.live_state()
        decision = decide(compiled or self._compiled, facts, live)
        self._note_demand(compiled or self._compiled, facts, live.now)
        self.turns += 1
        if decision.slo_out:  # only the applied decision moves slo_cost's hysteresis, never a shadow
            self.slo_out = apply_slo_out(self.slo_out, decision.slo_out)
        if decision.predicted_ttft and decision.targets:  # what the model said of where it goes
            first = decision.targets[0].backend
            for backend, ttft_s in decision.predicted_ttft:
                if backend == first:
                    self.ttft_scale.predicted(backend, ttft_s, live.now)
        if decision.targets and live.health_of(decision.targets[0].backend).state == "half_open":
            self.health.claim_probe(decision.targets[0].backend, live.now)  # this request is the probe
        if self._shadow is not None and facts.model_alias in self._shadow.aliases:
            other = decide(self._shadow, facts, live)
            decision = replace(decision, shadow_rule=f"shadow-policy:{other.rule}",
                               shadow_targets=other.targets, shadow_reason=other.reason)
        if decision.shadow_differs:
            log.info(json.dumps({"event": "policy.shadow", "rule": decision.rule, "shadow_rule": decision.shadow_rule,
                                 "targets": [t.backend for t in decision.targets],
                                 "shadow_targets": [t.backend for t in decision.shadow_targets]}))
        return decision

    def _note_demand(self, compiled: CompiledPolicy, facts: RequestFacts, now: float) -> None:
        """The request's team wants the engines that serve its alias (fairness: a claim on them for a while)."""
        alias = compiled.aliases.get(facts.model_alias)
        if alias is not None and compiled.policy.fairness.enabled:
            cls = request_class(compiled.team(facts.team).priority_class, facts.headers.get(CLASS_HEADER))
            self.demand.note((b for b in alias.by_backend if b in compiled.engines), facts.team, cls, now)

    def reserve(self, backend: str, facts: RequestFacts) -> Hold | None:
        """Hold the request's KV blocks on an engine until release(); None for hosted backends."""
        if backend not in self._compiled.engines:
            return None
        blocks = facts.blocks_needed.get(backend)
        if blocks is None:
            snap = self.poller.snapshots.get(backend)
            tokens = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens) + facts.output_on(backend)
            blocks = math.ceil(tokens / (snap.block_size if snap else 16))
        hold = self.holds.add(backend, blocks, self.clock(), facts.team)
        self.prefixes.sent(backend, facts, hold.hold_id, self.poller.snapshots.get(backend))
        return hold

    def release(self, hold: Hold | None) -> None:
        """Give the blocks back (idempotent; None is ignored)."""
        if hold is not None:
            self.prefixes.done(hold.hold_id)
        self.holds.release(hold, self.clock())

    def reserved_blocks(self) -> dict[str, int]:
        return dict(self.holds.reserved())

    def record_result(self, backend: str, ok: bool, ttft_s: float | None = None) -> None:
        """One attempt's outcome: ok once the first byte arrived (with its TTFT), else a failure
        before the first byte (connect error, 5xx, 429, first-token timeout)."""
        self.health.record(backend, ok, ttft_s, self.clock())
        if ok and ttft_s is not None:
            self.ttft_scale.observed(backend, ttft_s, self.clock())

    def record_usage(self, facts: RequestFacts, target: Target, prompt_tokens: int | None,
                     completion_tokens: int | None) -> None:
        """Learn from a finished request: the target's own prompt count calibrates ours, and the
        completion length feeds the team's p90 (pass only upstream-reported prompt counts)."""
        if prompt_tokens:
            self.calibration.observe(calibration_key(target, facts.encoding), facts.prompt_tokens, prompt_tokens)
        if completion_tokens is not None:
            self.outputs.record(facts.team, completion_tokens)

    def cost_usd(self, target: Target, prompt_tokens: int, completion_tokens: int) -> float:
        """What a finished request cost on its target (0.0 where no price is known)."""
        compiled = self._compiled
        price: TokenPrice | None
        if target.backend in compiled.engines:
            spec = compiled.policy.backends.get(target.backend)
            price = local_price(compiled.policy.prices.get(target.model) or (spec.price if spec else None),
                                self.poller.snapshots.get(target.backend))
        else:
            price = compiled.hosted_prices.get((target.backend, target.model))
        return price.cost(prompt_tokens, completion_tokens) if price is not None else 0.0

    def hosted_cost_usd(self, alias: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What the tokens would have cost on the alias's first priced hosted deployment (for the
        reports' all-hosted comparison); None when the alias has none."""
        found = self._compiled.hosted_deployment(alias)
        return found[1].cost(prompt_tokens, completion_tokens) if found is not None else None

    def set_shadow(self, shadow: Policy | LoadedPolicy | None) -> None:
        """Run another policy in shadow: its decision is recorded on each RouteDecision, never applied."""
        self._shadow = _compile(shadow, self._prices) if shadow is not None else None

    def reload(self, policy: Policy | LoadedPolicy) -> None:
        """Swap in a new policy. Requests that pinned the old `compiled` finish under it."""
        compiled = _compile(policy, self._prices)
        self.counter.warm({a.encoding for a in compiled.aliases.values()})
        if compiled.uses_difficulty or compiled.uses_category:
            self.quality.warm(compiled.policy.categories)  # the first request after a reload pays nothing
        health = HealthBook(compiled.policy.backends, compiled.policy.health)
        health.carry_over(self.health)
        self._compiled, self.health = compiled, health
        self.poller.interval_s = compiled.policy.health.poll_interval_s
        self.poller.set_sources(state_sources(compiled.policy, self.engine_urls))
