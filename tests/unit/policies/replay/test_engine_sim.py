"""The simulated engine: the engine's own scheduler stepped with model step times."""
from __future__ import annotations

import pytest

from policies.perf_model import EngineModel
from policies.replay.engine_sim import EngineEvent, SimEngine
from tests.unit.policies.replay.support import SIMPLE_ENGINE


def _times(events: list[EngineEvent]) -> dict[tuple[int, bool], float]:
    return {(e.request, e.first_token): e.time for e in events}


def test_one_request_takes_a_prefill_step_then_one_decode_step_per_token() -> None:
    engine = SimEngine(SIMPLE_ENGINE, prefix_caching=False)
    engine.submit(0, [1] * 100, output_tokens=50, now=5.0)
    events: list[EngineEvent] = []
    engine.advance(float("inf"), events)
    assert _times(events) == {(0, True): pytest.approx(5.1), (0, False): pytest.approx(5.1 + 49 * 0.01)}
    assert engine.blocks.num_free_blocks == 100  # all given back
    assert engine.busy_s == pytest.approx(0.1 + 0.49)


def test_fast_forwarded_decode_runs_match_stepping_one_arrival_at_a_time() -> None:
    model = EngineModel(prefill_fixed_s=0.05, prefill_per_token_s=1e-4, decode_fixed_s=0.01, decode_per_seq_s=0.002,
                        decode_per_context_token_s=1e-5, num_blocks=60, max_num_seqs=4)
    results = []
    for until_step in (float("inf"), 0.003):
        engine = SimEngine(model, prefix_caching=False)
        events: list[EngineEvent] = []
        for i, (prompt, out) in enumerate([(120, 40), (300, 90), (30, 200), (500, 10), (64, 64), (200, 33)]):
            engine.submit(i, [i + 1] * prompt, out, now=0.0)
        if until_step == float("inf"):
            engine.advance(until_step, events)
        else:
            t = 0.0
            while engine.scheduler.has_work():
                t += until_step
                engine.advance(t, events)
        results.append(_times(events))
    assert results[0].keys() == results[1].keys() and len(results[0]) == 12
    for key, when in results[0].items():
        assert results[1][key] == pytest.approx(when, rel=1e-9)


def test_shared_prefix_is_computed_once() -> None:
    engine = SimEngine(SIMPLE_ENGINE, prefix_caching=True)
    prefix = list(range(1, 65))  # 4 full blocks
    events: list[EngineEvent] = []
    engine.submit(0, prefix + [1000] + [0] * 20, 5, now=0.0)
    engine.advance(float("inf"), events)
    engine.submit(1, prefix + [1001] + [0] * 20, 5, now=10.0)
    engine.advance(float("inf"), events)
    assert engine.blocks.num_hit_tokens == 64


def test_refusals_too_large_and_full() -> None:
    engine = SimEngine(EngineModel(num_blocks=10, max_waiting=1, max_model_len=4096), prefix_caching=False)
    assert engine.refusal(200, 10, now=0.0) == "too_large"  # 210 tokens > 10 blocks × 16
    assert engine.refusal(100, 10, now=0.0) == ""
    engine.submit(0, [1] * 100, 10, now=0.0)
    assert engine.refusal(100, 10, now=0.0) == "full"  # one waiting = its max_waiting


def test_fast_forward_matches_stepping_through_preemptions() -> None:
    # 6 requests of 64 + 200 tokens need 17 blocks each at the end; 30 blocks force preemptions.
    model = EngineModel(prefill_fixed_s=0.05, prefill_per_token_s=1e-4, decode_fixed_s=0.01, decode_per_seq_s=0.002,
                        decode_per_context_token_s=1e-5, num_blocks=30, max_num_seqs=4)
    results, preemptions = [], []
    for step in (None, 0.003):
        engine = SimEngine(model, prefix_caching=False)
        events: list[EngineEvent] = []
        for i in range(6):
            engine.submit(i, [i + 1] * 64, 200, now=0.0)
        t = 0.0
        while engine.scheduler.has_work():
            t = float("inf") if step is None else t + step
            engine.advance(t, events)
        results.append(_times(events))
        preemptions.append(engine.scheduler.num_preemptions)
    assert preemptions[0] == preemptions[1] > 0
    assert results[0].keys() == results[1].keys() and len(results[0]) == 12
    for key, when in results[0].items():
        assert results[1][key] == pytest.approx(when, rel=1e-9)


def test_while_a_step_runs_its_state_counts_as_waiting_what_the_step_took() -> None:
    # The engine publishes its state between steps (after adding new requests, before the step's scheduler
    # takes them) and counts a request added since as waiting: a poll while a step runs sees the queue the
    # step began with, plus arrivals. The replay's router and --calibrate's queue match read it so (issue
    # #13: the replay's view was one burst shorter, its router kept too much local on the quiet runs).
    engine = SimEngine(SIMPLE_ENGINE, prefix_caching=False)
    events: list[EngineEvent] = []
    for i in range(3):
        engine.submit(i, [1] * 20, output_tokens=5, now=0.0)
    engine.advance(0.0, events)  # the first step (0 → 0.1 s) prefills all three
    assert len(engine.scheduler.waiting) == 0 and engine.snapshot(0.05).num_waiting == 3
    engine.submit(3, [1] * 20, output_tokens=5, now=0.05)
    assert len(engine.scheduler.waiting) == 1 and engine.snapshot(0.05).num_waiting == 4
    engine.advance(0.1, events)  # the second step takes the fourth beside the three decodes
    assert len(engine.scheduler.waiting) == 0 and engine.snapshot(0.1).num_waiting == 1
    engine.advance(10.0, events)  # all done: idle, nothing waits
    assert engine.snapshot(10.0).num_waiting == 0


def test_while_a_step_runs_its_state_counts_what_it_began_with_running_and_in_blocks() -> None:
    # The state a poll reads while a step runs is the one published as it began (local_engine/engine.py
    # snapshot, between steps): the prompts it takes are still waiting, so neither running nor holding blocks;
    # those it finishes are still running and hold theirs (issue #13: they were counted both waiting and running).
    engine = SimEngine(SIMPLE_ENGINE, prefix_caching=False)
    events: list[EngineEvent] = []
    for i in range(3):
        engine.submit(i, [1] * 20, output_tokens=3, now=0.0)  # 20 + 3 tokens: 2 blocks of 16 each
    engine.advance(0.0, events)  # the prefill step, 0 → 0.1 s
    assert len(engine.scheduler.running) == 3 and engine.blocks.num_free_blocks == 94
    snap = engine.snapshot(0.05)
    assert (snap.num_waiting, snap.num_running, snap.num_blocks_free) == (3, 0, 100)
    engine.advance(0.1, events)  # the first decode step, 0.1 → 0.11 s: the same three, their blocks taken
    snap = engine.snapshot(0.105)
    assert (snap.num_waiting, snap.num_running, snap.num_blocks_free) == (0, 3, 94)
    engine.advance(0.115, events)  # the last decode step, 0.11 → 0.12 s: all three finish at its end
    assert not engine.scheduler.running and engine.blocks.num_free_blocks == 100
    snap = engine.snapshot(0.115)
    assert (snap.num_waiting, snap.num_running, snap.num_blocks_free) == (0, 3, 94)
    snap = engine.snapshot(0.12)  # stepped past it: idle, all given back
    assert (snap.num_waiting, snap.num_running, snap.num_blocks_free) == (0, 0, 100)


def test_the_engine_refuses_on_the_queue_its_state_reports() -> None:
    # AsyncLLMEngine.submit refuses (EngineFull) on its snapshot's num_waiting: while a step runs, the queue
    # it began with plus arrivals since, not what its scheduler left waiting.
    model = EngineModel(prefill_fixed_s=0.1, prefill_per_token_s=0.0, decode_fixed_s=0.01, decode_per_seq_s=0.0,
                        decode_per_context_token_s=0.0, num_blocks=100, max_waiting=3)
    engine = SimEngine(model, prefix_caching=False)
    events: list[EngineEvent] = []
    for i in range(3):
        assert engine.refusal(20, 5, now=0.0) == ""
        engine.submit(i, [1] * 20, output_tokens=5, now=0.0)
    assert engine.refusal(20, 5, now=0.0) == "full"
    engine.advance(0.0, events)  # the prefill step takes all three: none left in the scheduler's queue
    assert not engine.scheduler.waiting and engine.refusal(20, 5, now=0.05) == "full"
    engine.advance(0.1, events)  # the next step began with none waiting
    assert engine.refusal(20, 5, now=0.1) == ""
    assert engine.refusal(20, 10_000, now=0.1) == "too_large"
