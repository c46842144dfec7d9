"""The simulated engine as the engine now runs: a mixed step is one forward pass (one fixed cost, the
larger), and its state reports the prefill and decode rates it measured over its recent steps (tokens per
busy second, 0 with no step in the window), as local_engine/stats.py does, not a nominal rate — and, while
a step runs, as the state the engine published before it (none of that step's tokens)."""
from __future__ import annotations

import pytest

from policies.perf_model import EngineModel
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.step_rates import StepRates

# A prefill pass: 40 ms + 1 ms a token; a decode step: 10 ms + 2 ms a sequence. Budget 64, floor 64.
MODEL = EngineModel(source="test", prefill_fixed_s=0.04, prefill_per_token_s=0.001, decode_fixed_s=0.01,
                    decode_per_seq_s=0.002, decode_per_context_token_s=0.0, num_blocks=4096, max_model_len=4096,
                    max_num_batched_tokens=64, prefill_floor_tokens=64)


def test_a_mixed_step_costs_one_pass() -> None:
    # 4 decodes + 64 prompt tokens: max(40, 10) ms + 4 × 2 ms + 64 × 1 ms = 112 ms (two passes: 122 ms).
    assert MODEL.mixed_time(4, 0, 64) == pytest.approx(0.112)
    engine, events = SimEngine(MODEL, False), []  # type: ignore[var-annotated]
    for i in range(4):
        engine.submit(i, 10, 1000, 0.0)
    engine.advance(0.0, events)  # the idle engine prefills the four together: 40 + 40 ms
    assert engine.clock == pytest.approx(0.08)
    engine.submit(4, 64, 5, 0.08)  # one chunk of 64 beside the 4 decodes: one mixed step
    engine.advance(0.08, events)
    first = next(e.time for e in events if isinstance(e, EngineEvent) and e.request == 4 and e.first_token)
    assert first == pytest.approx(0.08 + 0.112)


def test_the_state_reports_the_rates_it_measured() -> None:
    engine, events = SimEngine(MODEL, False), []  # type: ignore[var-annotated]
    idle = engine.snapshot(0.0)
    assert (idle.prefill_tokens_per_s, idle.decode_tokens_per_s) == (0.0, 0.0)  # nothing ran: 0, as the engine
    engine.submit(0, 60, 3, 0.0)
    engine.advance(0.0, events)  # one prefill step: 60 tokens in 0.1 s
    assert engine.snapshot(0.1).prefill_tokens_per_s == pytest.approx(600.0)
    engine.submit(1, 64, 3, 0.1)
    engine.advance(0.1, events)  # a mixed step of 1 decode + 64 tokens, 0.106 s, split by tokens
    snap = engine.snapshot(engine.clock)  # at its end (0.1 + 0.106: a float a hair above 0.206)
    assert snap.prefill_tokens_per_s == pytest.approx((60 + 64) / (0.1 + 0.106 * 64 / 65))
    assert snap.decode_tokens_per_s == pytest.approx(1 / (0.106 / 65))
    engine.advance(float("inf"), events)
    later = engine.snapshot(engine.clock + 10.5)  # past the engine's 10 s window: idle again
    assert (later.prefill_tokens_per_s, later.decode_tokens_per_s) == (0.0, 0.0)


def test_while_a_step_runs_the_state_reports_the_rates_of_the_steps_before_it() -> None:
    """The engine publishes its state between steps (local_engine/core_thread.py, core_process): a poll while
    a step runs sees the rates as of that step's start, none of that step's tokens."""
    engine, events = SimEngine(MODEL, False), []  # type: ignore[var-annotated]
    engine.submit(0, 60, 3, 0.0)
    engine.advance(0.0, events)  # a prefill step, 0 → 0.1 s
    running = engine.snapshot(0.05)
    assert (running.prefill_tokens_per_s, running.decode_tokens_per_s) == (0.0, 0.0)  # none ended yet
    engine.submit(1, 64, 3, 0.1)
    engine.advance(0.1, events)  # a mixed step, 0.1 → 0.206 s
    mixed = engine.snapshot(0.15)
    assert (mixed.prefill_tokens_per_s, mixed.decode_tokens_per_s) == (pytest.approx(600.0), 0.0)
    assert engine.snapshot(engine.clock).decode_tokens_per_s == pytest.approx(1 / (0.106 / 65))


def test_a_decode_run_reports_every_step_but_the_one_that_runs() -> None:
    rates = StepRates(10.0)
    rates.record_run(0.5, 2, 5, 0.5)  # five steps of 2 sequences, 0.1 s each
    rates.record_run(0.6, 4, 1, 0.1)  # then one of 4
    assert rates.rates(0.55).decode_tokens_per_s == pytest.approx(10 / 0.5)  # the sixth runs: the five
    assert rates.rates(0.6).decode_tokens_per_s == pytest.approx(14 / 0.6)
    rates.record_run(1.0, 2, 4, 0.4)  # four more of 2, from 0.6: the first three count while the fourth runs
    assert rates.rates(0.95).decode_tokens_per_s == pytest.approx(20 / 0.9)
