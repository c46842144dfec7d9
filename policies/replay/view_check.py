"""The replay's gateway checked against the real one, request by request: what its simulated gateway saw
of each engine (and chose) when it routed each request, beside what the ledger says the real gateway saw;
optionally with the recorded routing forced, so both see the same history and only their views differ."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from observability.usage import EngineView
from policies.decide import decide
from policies.decision import RequestFacts, RouteDecision
from policies.live import LiveState
from policies.loader import LoadedPolicy
from policies.replay.outcome import Outcomes
from policies.replay.simulator import ReplayRun, ReplaySetup
from policies.replay.traffic import TrafficRecord
from policies.route_view import engine_views


@dataclass(frozen=True)
class ViewCheck:
    """Per request (the traffic's order): the replay's view and its own choice, and what decide() chooses
    on the RECORDED view (the same facts and policy): "" where a column does not apply."""

    outcomes: Outcomes
    views: tuple[Mapping[str, EngineView], ...]
    chosen: tuple[str, ...]  # the first target decide() chose on the replay's view ("" refused)
    on_recorded: tuple[str, ...]  # the first target on the recorded view ("" refused, or none recorded)


def live_from_view(live: LiveState, view: Mapping[str, EngineView]) -> LiveState:
    """`live` with each engine's state replaced by a recorded view: its estimated queue and free KV as a
    fresh snapshot with nothing in flight (LiveState.num_waiting / free_blocks then give them back)."""
    engines = dict(live.engines)
    for name, seen in view.items():
        snap = engines.get(name)
        if snap is None or seen.queued is None or seen.free is None:
            engines.pop(name, None)  # unknown to the real gateway: unknown here
            continue
        engines[name] = replace(snap, taken_at=live.now, num_waiting=seen.queued, num_running=0,
                                num_blocks_free=min(seen.free, snap.num_blocks_total))
    return LiveState(live.now, engines, live.health, {}, live.stale_after_s, slo_out=live.slo_out)


class _Checker:
    """ReplayRun's decision hook: keeps the replay's view and choice of each request, and decide() on the
    recorded view; `forced`: returns where the recording says the request went instead."""

    def __init__(self, traffic: Sequence[TrafficRecord], forced: bool) -> None:
        n = len(traffic)
        self.traffic, self.forced = traffic, forced
        self.views: list[Mapping[str, EngineView]] = [{}] * n
        self.chosen, self.on_recorded = [""] * n, [""] * n

    def __call__(self, run: ReplayRun, i: int, facts: RequestFacts, live: LiveState,
                 decision: RouteDecision) -> RouteDecision:
        recorded = self.traffic[i].recorded
        self.views[i] = engine_views(live, run.engines)
        self.chosen[i] = decision.targets[0].backend if decision.targets else ""
        if recorded is not None and recorded.view:
            other = decide(run.compiled, facts, live_from_view(live, recorded.view))
            self.on_recorded[i] = other.targets[0].backend if other.targets else ""
        if not self.forced or recorded is None:
            return decision
        alias = run.compiled.aliases[facts.model_alias]
        target = alias.by_backend.get(recorded.backend)
        # Where the real gateway sent it (first); nowhere when it refused it or served none.
        return replace(decision, targets=(target,) if target is not None else (), refusal=decision.refusal or
                       ("" if target is not None else "recorded_refusal"))


def replay_checked(loaded: LoadedPolicy, traffic: Sequence[TrafficRecord], setup: ReplaySetup,
                   forced: bool = False) -> ViewCheck:
    """Replay `traffic` recording the gateway's view per request; `forced`: each request goes where the
    recording says it went (the replay's own choice is still taken and kept in `chosen`)."""
    checker = _Checker(traffic, forced)
    out = ReplayRun(loaded, traffic, setup, checker).run()
    return ViewCheck(out, tuple(checker.views), tuple(checker.chosen), tuple(checker.on_recorded))
