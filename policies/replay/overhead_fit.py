"""The time a local request waits outside the engine's steps, and its fit to a recording: a constant plus
the wait behind the requests ahead of it (every backend's) in a front end serving one at a time, each
taking `frontend_service_s` — the per-request work of the gateway, the engine server and the clients on
a shared host, which backs up when requests arrive faster than it clears them (docs/replay.md)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from statistics import median

from policies.perf_model import EngineModel
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.traffic import TrafficRecord

MIN_REQUESTS = 8  # as recording_fit: fewer served requests, nothing to fit
# Service times tried: 0 (a constant overhead only) to 60 ms in 5 ms steps, then 0.5 ms steps around the
# best (a front end clearing fewer than ~17 requests/s would have backed up without bound in every
# recording seen here); each try is one pass over the recording.
COARSE_S, FINE_S, MAX_SERVICE_S = 0.005, 0.0005, 0.060


def frontend_waits(times: Sequence[float], service_s: float) -> list[float]:
    """Each arrival's wait (sorted arrival times) in a one-at-a-time front end taking `service_s` each."""
    waits, free = [], float("-inf")
    for t in times:
        start = t if t >= free else free
        waits.append(start - t)
        free = start + service_s
    return waits


def request_overheads(model: EngineModel, times: Sequence[float]) -> list[float]:
    """The time outside the engine's steps of requests arriving at these (sorted) times: the constant,
    then the front end's wait and service (the arrivals alone decide it: the same in recording and replay)."""
    if not model.frontend_service_s:
        return [model.request_overhead_s] * len(times)
    fixed = model.request_overhead_s + model.frontend_service_s
    return [fixed + w for w in frontend_waits(times, model.frontend_service_s)]


def engine_ttfts(records: Sequence[TrafficRecord], model: EngineModel) -> list[float]:
    """Each record's TTFT on the simulated engine alone, sent at its recorded time (routing as recorded)."""
    engine = SimEngine(replace(model, request_overhead_s=0.0, frontend_service_s=0.0), False)
    events: list[EngineEvent] = []
    t0 = records[0].time
    for i, r in enumerate(records):
        engine.advance(r.time - t0, events)
        engine.submit(i, r.prompt_tokens, r.output_tokens, r.time - t0)
    engine.advance(float("inf"), events)
    first = {e.request: e.time for e in events if e.first_token}
    return [first[i] - (r.time - t0) for i, r in enumerate(records)]


def excess_ttfts(records: Sequence[TrafficRecord], backend: str, model: EngineModel) -> tuple[list[int], list[float]]:
    """(index in `records`, measured TTFT − the simulated engine's queue + prefill) of each request
    `backend` served in `records` (sorted by time, every backend's)."""
    served = [i for i, r in enumerate(records) if r.recorded is not None and r.recorded.backend == backend
              and r.recorded.ttft_s is not None]
    if not served:
        return [], []
    sim = engine_ttfts([records[i] for i in served], model)
    return served, [records[i].recorded.ttft_s - s for i, s in zip(served, sim)]  # type: ignore[union-attr, operator]


def fit_frontend(times: Sequence[float], served: Sequence[int], excess: Sequence[float],
                 floor: float = 0.0) -> tuple[float, float]:
    """(constant, service time) minimising the absolute error of constant + service + wait against the
    excess of the served requests (the constant: the median of what is left, at least `floor`)."""
    def error(service: float) -> tuple[float, float, float]:
        waits = frontend_waits(times, service)
        left = [e - service - waits[i] for i, e in zip(served, excess)]
        fixed = max(floor, median(left))
        return sum(abs(x - fixed) for x in left), service, fixed

    coarse = min(error(k * COARSE_S) for k in range(round(MAX_SERVICE_S / COARSE_S) + 1))  # ties: the smaller
    steps = round(COARSE_S / FINE_S)
    fine = min(error(max(0.0, coarse[1] + k * FINE_S)) for k in range(-steps, steps + 1))
    return fine[2], fine[1]


def fit_overhead(records: Sequence[TrafficRecord], backend: str, model: EngineModel) -> EngineModel:
    """`model` (its step times already fitted) with request_overhead_s and frontend_service_s fitted to
    what the gateway measured of this engine's TTFTs beyond its steps (request_overhead_s at least the
    model's); unchanged with too few requests."""
    served, excess = excess_ttfts(records, backend, model)
    if len(served) < MIN_REQUESTS:
        return model
    # The overhead the idle arrivals showed beyond the engine's step (recording_fit) is the floor: the
    # busy requests' excess also holds the simulated queue's errors, which can push the median below it.
    fixed, service = fit_frontend([r.time for r in records], served, excess, model.request_overhead_s)
    how = f"overhead {fixed * 1e3:.1f} ms + front end {service * 1e3:.1f} ms a request"
    return replace(model, request_overhead_s=round(fixed, 6), frontend_service_s=round(service, 6),
                   source=f"{model.source}; {how}" + (f" ({1 / service:.0f} requests/s)" if service else ""))
