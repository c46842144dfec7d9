"""How much of an engine's fitted request overhead the engine itself holds: the share of it moved into the
prefill's fixed cost (a time the engine is busy for) that makes the simulated engine's queue, fed the recorded
routing, match the queue the gateway's own polls saw (the ledger's engine views) — docs/replay.md."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from statistics import mean

from policies.perf_model import EngineModel
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.overhead_fit import MIN_REQUESTS, fit_overhead
from policies.replay.traffic import TrafficRecord

HELD_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # tried in this order; a tie keeps the smaller


def recorded_polls(records: Sequence[TrafficRecord], backend: str) -> list[tuple[float, int]]:
    """(time, waiting) of each distinct poll of `backend` the records' views show (their routing's), by time."""
    polls: dict[float, int] = {}
    for r in records:
        view = r.recorded.view.get(backend) if r.recorded is not None else None
        if view is not None and view.polled_s is not None:
            polls.setdefault(round(r.time + view.polled_s, 4), view.waiting)
    return sorted(polls.items())


def simulated_waiting(records: Sequence[TrafficRecord], backend: str, model: EngineModel,
                      polls: Sequence[tuple[float, int]]) -> list[int]:
    """The simulated engine's queue at each poll's time, sent the requests `backend` served at their recorded
    arrivals (the recorded routing; its steps only: the time outside them does not hold it)."""
    engine = SimEngine(replace(model, request_overhead_s=0.0, frontend_service_s=0.0), False)
    events: list[EngineEvent] = []
    served = [r for r in records if r.recorded is not None and r.recorded.backend == backend]
    at = sorted([(r.time, 1, i) for i, r in enumerate(served)] + [(t, 0, -1) for t, _ in polls])
    t0, waiting = records[0].time, []
    for t, is_arrival, i in at:  # a poll at an arrival's instant is before it
        engine.advance(t - t0, events)
        if is_arrival:
            engine.submit(i, served[i].prompt_tokens, served[i].output_tokens, t - t0)
        else:
            waiting.append(engine.reported_waiting(t - t0))
    return waiting


def fit_held(records: Sequence[TrafficRecord], backend: str, model: EngineModel) -> EngineModel:
    """`model` (steps and overhead fitted) with the HELD_SHARES share of its request overhead moved into the
    prefill's fixed cost whose simulated queue at the recorded polls is nearest theirs on average, the time
    outside the steps fitted again beside it; unchanged without an overhead or fewer than MIN_REQUESTS polls.
    On a loaded host, part of what the first token waited beyond the fitted steps was the engine's (its
    queue, which the router sees and spills on), and charged wholly outside it the replay kept 8-9 points
    too much local (docs/benchmarks.md, session 10)."""
    polls = recorded_polls(records, backend)
    if not model.request_overhead_s or len(polls) < MIN_REQUESTS:
        return model
    seen = mean(w for _, w in polls)

    def moved(share: float) -> EngineModel:
        held = share * model.request_overhead_s
        return replace(model, prefill_fixed_s=model.prefill_fixed_s + held, request_overhead_s=model.request_overhead_s - held)

    gap, share = min((abs(mean(simulated_waiting(records, backend, moved(s), polls)) - seen), s) for s in HELD_SHARES)
    if not share:
        return model
    refitted = fit_overhead(records, backend, replace(moved(share), frontend_service_s=0.0))
    return replace(refitted, source=f"{refitted.source}; {share:.0%} of the overhead held by the engine "
                   f"(its queue at the {len(polls)} polls {gap:.2f} from theirs)")
