"""What the gateway knows and learns about its backends between decisions: the engines' polled state,
circuit health, KV holds of in-flight requests, slo_cost's hysteresis and TTFT scale, team demand
(fairness), what was sent where (prefix affinity), prompt-count calibration and output lengths.
`live_state()` freezes it for one decision; the request path feeds it results and usage."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Protocol

from policies.calibration import Calibration
from policies.compiled import CompiledPolicy
from policies.current import CurrentPolicy
from policies.decide import apply_slo_out
from policies.decision import RequestFacts, RouteDecision, Target
from policies.facts import calibration_key
from policies.fairness import CLASS_HEADER, DemandBook, request_class
from policies.health import HealthBook
from policies.holds import Hold, HoldBook
from policies.live import EngineSnapshot, LiveState
from policies.output_stats import OutputStats
from policies.prefix_tracker import PrefixTracker
from policies.ttft_scale import TtftScale

_NO_OCCUPANCY: Mapping[str, float] = MappingProxyType({})


class PolledEngines(Protocol):
    """The engines' latest polled state: policies.engine_poller.EngineStatePoller, the I/O side."""

    @property
    def snapshots(self) -> Mapping[str, EngineSnapshot]: ...
    @property
    def unreachable(self) -> frozenset[str]: ...
    @property
    def errors(self) -> Mapping[str, str]: ...


class LiveBook:
    """Reads the engines' snapshots from `poller` (which it neither starts nor stops) and the policy
    in force from `policy` (its health settings, engines, fairness window). No I/O of its own."""

    def __init__(self, policy: CurrentPolicy, poller: PolledEngines,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._policy, self.poller, self.clock = policy, poller, clock
        settings = policy.current.policy.health
        self.calibration = Calibration()
        self.outputs = OutputStats()
        self.health = HealthBook(policy.current.policy.backends, settings)
        self.holds = HoldBook()
        self.slo_out: frozenset[tuple[str, float]] = frozenset()  # see LiveState.slo_out
        self.demand = DemandBook()  # which teams asked for which engines lately (team fairness)
        self.prefixes = PrefixTracker()  # what we sent to which engine, for prefix_affinity
        self.turns = 0  # decisions taken: round-robin's turn (LiveState.turn)
        self.ttft_scale = TtftScale(settings.ttft_ewma_alpha)  # see LiveState.ttft_scale

    @property
    def poll_errors(self) -> Mapping[str, str]:
        """Backend → its last failed state poll's error (none while polls answer)."""
        return self.poller.errors

    def live_state(self) -> LiveState:
        now, compiled = self.clock(), self._policy.current
        snapshots = self.poller.snapshots
        return LiveState(now, snapshots, self.health.view(now), self.holds.reserved(),
                         compiled.policy.health.stale_after_s, self.poller.unreachable,
                         self.holds.released_since(snapshots), self.holds.in_flight(snapshots), self.slo_out,
                         teams=self.demand.view(self.holds.by_team(), now,
                                                compiled.policy.fairness.demand_window_s),
                         turn=self.turns, prefix_occupancy=self._prefix_occupancy(compiled),
                         ttft_scale=self.ttft_scale.scales(now))

    def _prefix_occupancy(self, compiled: CompiledPolicy) -> Mapping[str, float]:
        """Only prefix_affinity reads it (the policy in force's or the shadow's): none built otherwise."""
        shadow = self._policy.shadow
        if compiled.uses_prefix_index or (shadow is not None and shadow.uses_prefix_index):
            return self.prefixes.occupancy(compiled.engines)
        return _NO_OCCUPANCY

    def decided(self, compiled: CompiledPolicy, facts: RequestFacts, decision: RouteDecision,
                live: LiveState) -> bool:
        """Learn from a decision about to be applied (never a shadow's): team demand, the turn,
        slo_cost's hysteresis and predicted TTFT, and which request probes a half-open circuit (True: this one)."""
        self._note_demand(compiled, facts, live.now)
        self.turns += 1
        if decision.slo_out:
            self.slo_out = apply_slo_out(self.slo_out, decision.slo_out)
        if decision.predicted_ttft and decision.targets:  # what the model said of where it goes
            first = decision.targets[0].backend
            for backend, ttft_s in decision.predicted_ttft:
                if backend == first:
                    self.ttft_scale.predicted(backend, ttft_s, live.now)
        if decision.targets and live.health_of(decision.targets[0].backend).state == "half_open":
            return self.health.claim_probe(decision.targets[0].backend, live.now)  # this request is the probe
        return False

    def _note_demand(self, compiled: CompiledPolicy, facts: RequestFacts, now: float) -> None:
        """The request's team wants the engines that serve its alias (fairness: a claim on them for a while)."""
        engines = compiled.alias_engines.get(facts.model_alias)
        if engines is not None and compiled.policy.fairness.enabled:
            cls = request_class(compiled.team(facts.team).priority_class, facts.headers.get(CLASS_HEADER))
            self.demand.note(engines, facts.team, cls, now)

    def reserve(self, backend: str, facts: RequestFacts) -> Hold | None:
        """Hold the request's KV blocks on an engine until release(); None for hosted backends."""
        if backend not in self._policy.current.engines:
            return None
        blocks = facts.blocks_needed.get(backend)
        prompt = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens)
        if blocks is None:
            snap = self.poller.snapshots.get(backend)
            blocks = math.ceil((prompt + facts.output_on(backend)) / (snap.block_size if snap else 16))
        # Its prompt tokens: the engine's prefill work that the router counts as queued until a poll shows it.
        hold = self.holds.add(backend, blocks, self.clock(), facts.team, prompt)
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

    def policy_changed(self) -> None:
        """After a reload: a health book for the new backends and settings, carrying over what was learned."""
        compiled = self._policy.current
        health = HealthBook(compiled.policy.backends, compiled.policy.health)
        health.carry_over(self.health)
        self.health = health
