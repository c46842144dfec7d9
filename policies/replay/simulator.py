"""The discrete-event replay of recorded traffic against one policy: the real build_facts + decide()
on a simulated clock, simulated engines (their own scheduler and block manager) and hosted backends.

Deterministic for a seed. Events in time order: at each arrival every engine is stepped up to it,
earlier first tokens and finishes are applied (health TTFT stats, KV holds), then the request is
routed and dispatched in the decision's order, the next target taken on a refusal (as dispatch does).
"""
from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from observability.limits_protocol import Reservation
from policies.calibration import Calibration
from policies.compiled import compile_policy
from policies.decide import apply_slo_out, decide
from policies.decision import RequestFacts, RouteDecision
from policies.errors import RoutingError
from policies.facts import build_facts
from policies.live import LiveState
from policies.loader import LoadedPolicy
from policies.perf_model import PerfModel
from policies.perf_model_file import with_overrides
from policies.replay.budgets import ReplayLimiter, limits_config
from policies.replay.charges import request_cost, settled_cost
from policies.replay.engine_args import prefix_caching_off, shaped_by_args
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.fast_stats import FastHealthBook, FastOutputStats
from policies.replay.gateway_sim import GatewayView, HostedSim
from policies.replay.keys import StoredKey
from policies.replay.outcome import Outcomes
from policies.replay.overhead_fit import request_overheads
from policies.replay.poll_clock import engine_clocks
from policies.replay.prompt_ids import PromptIds
from policies.replay.traffic import TrafficRecord
from policies.tokens import TokenCounter

_EPOCH, _END = 1000.0, float("inf")  # the simulated monotonic clock at the first arrival; past the last

# (the run, the request's index, its facts, the gateway's view) and the decision -> the decision to dispatch
DecisionHook = Callable[["ReplayRun", int, RequestFacts, LiveState, RouteDecision], RouteDecision]


@dataclass(frozen=True)
class ReplaySetup:
    """Everything one replay needs besides the policy and the traffic."""

    perf: PerfModel
    price_table: Mapping[str, Any]
    seed: int = 0
    num_buckets: int = 120  # time-series resolution (KV occupancy, queue, backend split)
    # What the key store holds for the recording's keys (key_id → own limits, budget, on_exceed),
    # applied as the gateway does on top of the policy's `keys:` (policies/replay/keys.py).
    keys: Mapping[str, StoredKey] = field(default_factory=dict)
    # "period" / "recorded": the gateway polls engines on a clock of its own, as the real poller does
    # (policies/replay/poll_clock.py); "": at the first arrival an interval after the last poll.
    poll_clock: str = ""


class ReplayRun:
    """One replay of `traffic` against one policy; `run()` gives the outcomes. `on_decision` (optional) sees
    every decision, with the request's index, its facts and the gateway's view, and returns the decision to
    dispatch (itself, or another: policies/replay/view_check.py forces the recorded routing this way)."""

    def __init__(self, loaded: LoadedPolicy, traffic: Sequence[TrafficRecord], setup: ReplaySetup,
                 on_decision: DecisionHook | None = None) -> None:
        self.on_decision = on_decision
        perf = with_overrides(setup.perf, loaded.perf_model)  # the policy's named models, unless --perf-model names one
        self.compiled = compile_policy(loaded.policy, setup.price_table, loaded.source, loaded.absent_backends,
                                       perf_model=perf)
        policy = self.compiled.policy
        prefix = any(r.prefix_id for r in traffic)
        self.engines: dict[str, SimEngine] = {}
        self.overhead_s = {n: perf.engine(n).request_overhead_s for n in self.compiled.engines}
        # A load-dependent overhead (frontend_service_s): each request's own, from the arrivals ahead of it.
        self._overhead = {n: request_overheads(perf.engine(n), [r.time for r in traffic])
                          for n in self.compiled.engines if perf.engine(n).frontend_service_s}
        for n in sorted(self.compiled.engines):  # the engine the policy spawns, as its engine_args shape it
            args = policy.backends[n].engine_args
            self.engines[n] = SimEngine(shaped_by_args(perf.engine(n), args), prefix and not prefix_caching_off(args))
        self.hosted = {n: HostedSim(perf.hosted_model(n), setup.seed * 7919 + zlib.crc32(n.encode()))
                       for n in policy.backends if n not in self.compiled.engines}
        self.health = FastHealthBook(policy.backends, policy.health)
        clocks = engine_clocks(setup.poll_clock, {n: perf.engine(n).state_poll_s or policy.health.poll_interval_s
                                                  for n in self.engines}, setup.seed, traffic, _EPOCH - traffic[0].time)
        self.view = GatewayView(self.engines, self.health, policy.health.poll_interval_s, policy.health.stale_after_s, clocks)
        self.traffic = traffic
        self.t0 = traffic[0].time
        span = max(traffic[-1].time - self.t0, 1e-9)
        self.out = Outcomes(len(traffic), list(policy.backends), list(self.engines), span, setup.num_buckets)
        self.pending: list[tuple[float, int, int, str, bool]] = []  # (time, order, request, backend, first token)
        self._order = 0
        self.counter, self.calibration, self.outputs = TokenCounter(), Calibration(), FastOutputStats()
        self.engine_events: list[EngineEvent] = []
        self._prompts = PromptIds()
        self._blocks: dict[int, int] = {}
        self.keys = setup.keys
        key_limits = {key_id: spec.limits for key_id, spec in setup.keys.items()}
        config = limits_config(policy, key_limits)
        self.limiter = ReplayLimiter(config, key_limits) if config is not None else None
        self._held: dict[int, tuple[Reservation, float]] = {}  # request → (its reservation, its actual cost)
        self._bodies: dict[tuple[str, int | None, str], dict[str, Any]] = {}

    def run(self) -> Outcomes:
        out, engines, view, pending, t0 = self.out, self.engines, self.view, self.pending, self.t0
        for i, record in enumerate(self.traffic):
            now = _EPOCH + record.time - t0
            # _advance does nothing before the next poll falls due and the next event, with nothing in flight
            # on an engine (whose steps to now may end it): skip the call.
            if now >= view.polled_until or view.num_in_flight or (pending and pending[0][0] <= now):
                self._advance(now)
            out.at(now - _EPOCH)
            self._route(i, record, now)
            out.sample(engines)
        self._advance(_END)
        self.out.engine_busy_s = {n: e.busy_s for n, e in self.engines.items()}
        return self.out

    def _advance(self, now: float) -> None:
        # Engines are stepped when the gateway polls them, when a request is sent to them, and at each
        # arrival while this gateway has requests on them: the ends it saw before routing a request are in
        # its in-flight counts, which the router's queue estimate reads (stepped only at its own sends, an
        # engine's ends came late: the replay saw a queue of requests that had finished, and spilled). An
        # idle engine is not stepped between polls: fewer, longer decode runs keep the replay fast.
        view = self.view
        if view.poll_due(now):
            if view.clocks is None or now == _END:  # (at the end: every engine runs out its work)
                for name in self.engines:
                    self._step(name, now)
            else:  # each poll as of its own time: the engine stepped to it, what ended before it learned
                for name, taken, seen in view.polls_due(now):
                    self._step(name, taken)
                    self._learn(taken)
                    view.take(name, taken, seen)
                view.install(now)
        if view.num_in_flight:
            for name, book in view.books.items():
                if book.num:
                    self._step(name, now)
        self._learn(now)

    def _learn(self, now: float) -> None:
        """Apply the first tokens and ends the gateway has seen by `now`."""
        pending, traffic, t0, out = self.pending, self.traffic, self.t0, self.out
        while pending and pending[0][0] <= now:
            when, _, request, backend, first = heapq.heappop(pending)
            arrival = _EPOCH + traffic[request].time - t0
            if first:
                out.ttft[request] = when - arrival
                self.health.record(backend, True, when - arrival, when)
            else:
                out.e2e[request] = when - arrival
                if backend in self.engines:
                    self.view.ended(backend, request, self._blocks.pop(request), when)
                if self.limiter is not None:  # settled with the actuals when it ends, as the gateway does
                    held, cost = self._held.pop(request)
                    record = self.traffic[request]
                    self.limiter.settle(held, record.prompt_tokens + record.output_tokens, cost)

    def _step(self, name: str, now: float) -> None:
        self.engines[name].advance(now, self.engine_events)
        overhead = self.overhead_s[name]  # seen by the client that much later; the engine moved on
        own = self._overhead.get(name)
        for event in self.engine_events:
            self._push(event.time + (overhead if own is None else own[event.request]), event.request, name,
                       event.first_token)
        self.engine_events.clear()

    def _push(self, when: float, request: int, backend: str, first: bool) -> None:
        self._order += 1
        heapq.heappush(self.pending, (when, self._order, request, backend, first))

    def _route(self, i: int, record: TrafficRecord, now: float) -> None:
        live = self.view.live(now)
        try:
            facts = self._facts(record, live, False)
        except RoutingError as exc:
            self.out.refuse(i, exc.code)
            return
        decision = self._decide(i, facts, live, now)
        held: Reservation | None = None
        if self.limiter is not None and decision.targets:
            reserved = self._reserve(i, record, facts, decision, live, now)
            if isinstance(reserved, str):
                self.out.refuse(i, reserved)
                return
            facts, decision, held = reserved
        self.outputs.record(record.team, record.output_tokens)  # learned in arrival order (see docs/replay.md)
        for target in decision.targets:
            if self._dispatch(i, record, target.backend, target.model, facts.blocks_needed.get(target.backend), now,
                              facts.expected_output_tokens):
                self.out.rule[i] = decision.rule
                if held is not None:
                    self._held[i] = (held, settled_cost(self.compiled, target.backend, target.model, record, live))
                return
        if held is not None and self.limiter is not None:
            self.limiter.settle(held, 0, 0.0)  # nothing served it: no tokens, no spend
        self.out.refuse(i, decision.refusal or "all_targets_failed")

    def _facts(self, record: TrafficRecord, live: LiveState, over_budget: bool) -> RequestFacts:
        # The body build_facts reads, one per shape: it only reads it, and most share one. A field that asked for
        # constrained output asks again (any value but "text" does).
        shape = (record.model, record.max_tokens, record.structured_output)
        body = self._bodies.get(shape)
        if body is None:
            body = {"model": record.model}
            if record.max_tokens is not None:
                body["max_tokens"] = record.max_tokens
            if record.structured_output:
                body[record.structured_output] = {"type": "json_object"}
            self._bodies[shape] = body
        return build_facts(self.compiled, body, record.team, live, counter=self.counter, calibration=self.calibration,
                           headers=record.headers, team_p90=self.outputs.p90(record.team), over_budget=over_budget,
                           now_unix=record.time, prompt_tokens=record.prompt_tokens)

    def _decide(self, i: int, facts: RequestFacts, live: LiveState, now: float) -> RouteDecision:
        decision = decide(self.compiled, facts, live)
        if decision.slo_out:  # as LiveBook.decided applies it
            self.view.slo_out = apply_slo_out(self.view.slo_out, decision.slo_out)
        if decision.targets and live.health_of(decision.targets[0].backend).state == "half_open":
            self.health.claim_probe(decision.targets[0].backend, now)  # as LiveBook.decided does
        return decision if self.on_decision is None else self.on_decision(self, i, facts, live, decision)

    def _reserve(self, i: int, record: TrafficRecord, facts: RequestFacts, decision: RouteDecision, live: LiveState,
                 now: float) -> tuple[RequestFacts, RouteDecision, Reservation] | str:
        """Hold the estimate against the team's and key's limits as gateway/proxy.py's _reserve does: a
        USD budget whose team says `on_exceed: route` routes again with over_budget (that scope then goes
        unchecked); otherwise the refusal ("budget" or "rate_limit")."""
        assert self.limiter is not None
        unchecked: set[str] = set()
        while True:
            cost = facts.est_cost_usd.get(decision.targets[0].backend, 0.0)
            got = self.limiter.reserve(record.team, record.key_id, facts.prompt_tokens + facts.expected_output_tokens,
                                       cost, record.time, frozenset(unchecked))
            if isinstance(got, Reservation):
                return facts, decision, got
            if not got.is_budget or got.scope in unchecked or self._on_exceed(record, got.scope) != "route":
                return "budget" if got.is_budget else "rate_limit"
            if not unchecked:
                self.out.over_budget[i] = True
                facts = self._facts(record, live, True)
                decision = self._decide(i, facts, live, now)
                if not decision.targets:
                    return decision.refusal or "all_targets_failed"
            unchecked.add(got.scope)

    def _on_exceed(self, record: TrafficRecord, scope: str) -> str:
        """A spent budget of this scope: the key's own on_exceed for its budget, else the team's (proxy.on_exceed)."""
        spec = self.keys.get(record.key_id) if scope == "key" and record.key_id else None
        if spec is not None and spec.on_exceed is not None:
            return spec.on_exceed
        return self.compiled.team(record.team).budget.on_exceed

    def _dispatch(self, i: int, record: TrafficRecord, backend: str, model: str, blocks: int | None, now: float,
                  expected_output: int) -> bool:
        engine = self.engines.get(backend)
        if engine is not None:
            self._step(backend, now)
            if engine.refusal(record.prompt_tokens, record.max_tokens or record.output_tokens, now):
                self.health.record(backend, False, None, now)  # 400/503 before the first byte
                return False
            engine.submit(i, self._prompts.of(i, record) if engine.caches_prefixes else record.prompt_tokens,
                          record.output_tokens, now)
            self._blocks[i] = blocks if blocks is not None else engine.blocks.num_blocks_for(
                record.prompt_tokens + expected_output)
            self.view.started(backend, i, self._blocks[i], now, record.prompt_tokens)
        else:
            hosted = self.hosted[backend]
            if not hosted.admit(now):
                self.health.record(backend, False, None, now)  # 429
                return False
            ttft, e2e = hosted.timings(record.output_tokens)
            self._order += 1  # _push, inline (three in four requests go this way)
            heapq.heappush(self.pending, (now + ttft, self._order, i, backend, True))
            if self.limiter is None:  # its end changes no state: no event to queue (the same sum as at the pop)
                self.out.e2e[i] = now + e2e - now
            else:
                self._push(now + e2e, i, backend, False)
        self.out.serve(i, backend, request_cost(self.compiled, backend, model, record))
        return True


def replay(loaded: LoadedPolicy, traffic: Sequence[TrafficRecord], setup: ReplaySetup) -> Outcomes:
    """Replay `traffic` (sorted by time) against one policy; the per-request outcomes and time series."""
    return ReplayRun(loaded, traffic, setup).run()
