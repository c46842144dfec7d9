"""held_fit: the share of a fitted request overhead that the engine itself held (its queue at the recorded
polls shows it), moved into the prefill's fixed cost — and none where the recorded queue says it was outside."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from observability.usage import EngineView
from policies.perf_model import EngineModel
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.held_fit import fit_held, recorded_polls
from policies.replay.traffic import Recorded, TrafficRecord

# One engine at the CPU engine's budget; each prefill pass holds it 60 ms, a decode step 10 ms.
TRUTH = EngineModel(source="test", prefill_fixed_s=0.06, prefill_per_token_s=0.0, decode_fixed_s=0.01,
                    decode_per_seq_s=0.0005, decode_per_context_token_s=0.0, num_blocks=4096, max_model_len=4096,
                    max_num_batched_tokens=64, prefill_floor_tokens=64, burst_batched_tokens=0)
POLL_S = 0.25


def _recorded(truth: EngineModel, outside_s: float) -> list[TrafficRecord]:
    """8 s at 25 requests/s served by `truth` (plus `outside_s` a request that does not hold it), each record
    with the view of the last poll before it (the engine's queue then), as the gateway's ledger keeps it."""
    rng, t, requests = random.Random(3), 0.0, []
    while t < 8.0:
        t += rng.expovariate(25.0)
        requests.append((t, rng.randint(20, 120), rng.randint(5, 40)))
    engine, events, polls = SimEngine(truth, False), [], {}  # type: ignore[var-annotated]
    ticks = [k * POLL_S for k in range(int(10 / POLL_S))]
    for at, kind, i in sorted([(p, 0, -1) for p in ticks] + [(a, 1, i) for i, (a, _, _) in enumerate(requests)]):
        engine.advance(at, events)
        if kind:
            engine.submit(i, requests[i][1], requests[i][2], at)
        else:
            polls[at] = len(engine.scheduler.waiting)
    engine.advance(float("inf"), events)
    first = {e.request: e.time for e in events if isinstance(e, EngineEvent) and e.first_token}
    end = {e.request: e.time for e in events if isinstance(e, EngineEvent) and not e.first_token}
    out = []
    for i, (at, prompt, output) in enumerate(requests):
        polled = max(p for p in ticks if p <= at)
        view = EngineView(at - polled, polls[polled], 0, 4096, polls[polled], 4096, polled - at)
        out.append(TrafficRecord(1e9 + at, "t", "chat", prompt, output, recorded=Recorded(
            "local", "ok", 0.0, first[i] - at + outside_s, end[i] - at + outside_s, {"local": view})))
    return out


def test_an_overhead_the_engines_queue_showed_is_moved_into_its_steps() -> None:
    # The fit put 48 ms of each 60 ms pass outside the engine (as on a loaded host, docs/benchmarks.md): the
    # simulated queue is then shorter than the polls saw, and the router would spill less than the real one.
    records = _recorded(TRUTH, 0.0)
    assert len(recorded_polls(records, "local")) >= 20
    fitted = replace(TRUTH, prefill_fixed_s=0.012, request_overhead_s=0.048)
    held = fit_held(records, "local", fitted)
    assert held.prefill_fixed_s == pytest.approx(0.06) and "100% of the overhead held" in held.source
    assert held.request_overhead_s < 0.01


def test_an_overhead_outside_the_engine_stays_outside() -> None:
    records = _recorded(TRUTH, 0.05)  # 50 ms a request outside the engine: its queue as its steps alone make it
    fitted = replace(TRUTH, request_overhead_s=0.05)
    assert fit_held(records, "local", fitted) == fitted


def test_nothing_to_move_or_no_views_leaves_the_model() -> None:
    records = _recorded(TRUTH, 0.0)
    assert fit_held(records, "local", TRUTH) == TRUTH  # no overhead
    blind = [replace(r, recorded=replace(r.recorded, view={})) for r in records]  # type: ignore[arg-type]
    fitted = replace(TRUTH, prefill_fixed_s=0.012, request_overhead_s=0.048)
    assert fit_held(blind, "local", fitted) == fitted
