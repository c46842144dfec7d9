"""PolicyRouter: builds the routing parts over one policy and keeps them in step on reload. The gateway
hands each part to whoever needs it, and no caller reaches through the router:

    router = PolicyRouter(loaded_policy, engine_urls={"local": "http://127.0.0.1:8100/v1"})
    await router.start()          # polls engine state ~4×/s; await router.stop() at shutdown
    reloader = PolicyReloader(path, router.reload); await reloader.start()   # file change + SIGHUP

    router.policy: CurrentPolicy  # .current: the compiled policy a request pins for its whole life
    router.decider: Decider       # facts + decision for one request (sync, pure CPU)
    router.live: LiveBook         # live state and learning: KV holds, health, calibration, ...
    router.pricing: Pricing       # what a request costs on a target
    router.poller: EngineStatePoller   # the engines' latest polled state (metrics, readiness, console)

Per request:
    pinned = policy.current
    facts = decider.build_facts(body, team, headers=request.headers, compiled=pinned)
    decision = decider.route(facts, compiled=pinned)   # targets, rule, reason, strategy, refusal
    for target in decision.targets:             # try in order; next one on failure before first byte
        hold = live.reserve(target.backend, facts)  # KV blocks held while in flight (None: hosted)
        try: ...; live.record_result(target.backend, ok=True, ttft_s=ttft)  # at the first byte
        except <connect error, 5xx, 429, first-token timeout>: live.record_result(target.backend, ok=False)
        finally: live.release(hold)             # when the request ends (done, failed or aborted)
    live.record_usage(facts, target, prompt_tokens=upstream_prompt_or_None, completion_tokens=n)
    cost = pricing.cost_usd(target, prompt_tokens, completion_tokens)

Headers/trace: `x-hybridgw-route-rule: decision.rule`; log/trace `decision.reason`, and
`decision.shadow_rule` / `shadow_targets` / `shadow_reason` when a shadow rule or policy matched.
No targets: `decision.refusal` says why — "no_capacity" / "no_healthy_backend" → 503 with
Retry-After `ceil(decision.retry_after_s)`; "not_allowed" → 403; "too_large" (bigger than every
engine's context or KV pool, nowhere to spill) → 400 context_length_exceeded. build_facts raises RoutingError
(codes "model_not_found" and "model_not_allowed" → both 404 model_not_found, as OpenAI answers either:
gateway/errors.py routing_refusal). Budgets with `on_exceed: route`: when the limiter refuses a USD limit,
build the facts again with `over_budget=True` and route.
The cost to reserve against limits: `facts.est_cost_usd.get(decision.targets[0].backend, 0.0)`.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from policies.current import CurrentPolicy, compile_any
from policies.decider import Decider
from policies.engine_poller import EngineStatePoller, state_sources
from policies.estimator import litellm_price_table
from policies.holds import Hold
from policies.live_book import LiveBook
from policies.loader import LoadedPolicy
from policies.pricing import Pricing
from policies.schema import Policy
from policies.tokens import TokenCounter

__all__ = ["Hold", "PolicyRouter"]


class PolicyRouter:
    def __init__(self, policy: Policy | LoadedPolicy, *, engine_urls: Mapping[str, str] | None = None,
                 shadow: Policy | LoadedPolicy | None = None, price_table: Mapping[str, Any] | None = None,
                 counter: TokenCounter | None = None, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._prices = litellm_price_table() if price_table is None else price_table  # read once (~40 ms)
        compiled = compile_any(policy, self._prices)
        shadowed = compile_any(shadow, self._prices) if shadow is not None else None
        self.policy = CurrentPolicy(compiled, shadowed)
        self.engine_urls = dict(engine_urls or {})
        self.poller = EngineStatePoller(state_sources(compiled.policy, self.engine_urls),
                                        compiled.policy.health.poll_interval_s, clock=clock)
        self.live = LiveBook(self.policy, self.poller, clock)
        self.decider = Decider(self.policy, self.live, counter, wall_clock=wall_clock)
        self.pricing = Pricing(self.policy, self.poller)

    async def start(self) -> None:
        await self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()

    def set_engine_url(self, backend: str, url: str) -> None:
        """Tell the router where a spawned (or restarted) engine listens."""
        self.engine_urls[backend] = url
        self.poller.set_sources(state_sources(self.policy.policy, self.engine_urls))

    def set_shadow(self, shadow: Policy | LoadedPolicy | None) -> None:
        """Run another policy in shadow: its decision is recorded on each RouteDecision, never applied."""
        self.policy.shadow = compile_any(shadow, self._prices) if shadow is not None else None

    def reload(self, policy: Policy | LoadedPolicy) -> None:
        """Swap in a new policy. Requests that pinned the old `policy.current` finish under it."""
        compiled = compile_any(policy, self._prices)
        self.policy.current = compiled
        self.decider.warm()  # the first request after a reload pays nothing
        self.live.policy_changed()
        self.poller.interval_s = compiled.policy.health.poll_interval_s
        self.poller.set_sources(state_sources(compiled.policy, self.engine_urls))
