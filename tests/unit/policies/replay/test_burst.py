"""The engine's burst budget in the replay (local_engine/scheduler.py, --burst-batched-tokens): while decodes
run and two or more new prompts wait, a step admits up to 256 of their tokens, not the 64-token floor. Before,
the simulated engine set the floor by hand and left the burst at 0: 8 prompts beside running decodes took 8
steps where the engine takes 2."""
from __future__ import annotations

from dataclasses import replace

import pytest

from policies.perf_model import EngineModel, PerfModelError, perf_model_from_mapping
from policies.replay.engine_args import shaped_by_args
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.recording_fit import fit_from_recording

from .test_prefill_floor import _recorded_by

# Every step is one pass of 0.1 s, whatever it holds: a first token tells the step its prompt was admitted in.
CPU_LIKE = EngineModel(source="test", prefill_fixed_s=0.1, prefill_per_token_s=0.0, decode_fixed_s=0.1,
                       decode_per_seq_s=0.0, decode_per_context_token_s=0.0, num_blocks=4096,
                       max_model_len=4096, max_num_batched_tokens=64, prefill_floor_tokens=64)


def _steps_of_a_burst(model: EngineModel, prefix_caching: bool) -> list[int]:
    """8 prompts of 64 tokens arriving together beside 16 running decodes: the step (1 = the first after
    the one in progress) in which each sampled its first token."""
    engine, events = SimEngine(model, prefix_caching), []  # type: ignore[var-annotated]
    for i in range(16):  # they decode for the whole test
        engine.submit(i, [1000 + i] * 4 if prefix_caching else 4, 10_000, 0.0)
    engine.advance(1.0, events)
    start = engine.clock  # the step in progress at 1.0 ends here
    for i in range(16, 24):
        engine.submit(i, [i * 100 + k for k in range(64)] if prefix_caching else 64, 5, 1.0)
    engine.advance(5.0, events)
    firsts = {e.request: e.time for e in events
              if isinstance(e, EngineEvent) and e.first_token and e.request >= 16}
    return [round((firsts[i] - start) / 0.1) for i in range(16, 24)]


@pytest.mark.parametrize("prefix_caching", [False, True])  # the replay's fast schedule, and the engine's own
def test_a_burst_beside_decodes_is_admitted_at_the_burst_budget(prefix_caching: bool) -> None:
    assert CPU_LIKE.burst_batched_tokens == 256  # the engine's default
    assert _steps_of_a_burst(CPU_LIKE, prefix_caching) == [1, 1, 1, 1, 2, 2, 2, 2]  # 256 tokens a step
    off = replace(CPU_LIKE, burst_batched_tokens=0)  # --burst-batched-tokens 0: the floor's 64 a step
    assert _steps_of_a_burst(off, prefix_caching) == [1, 2, 3, 4, 5, 6, 7, 8]
    half = replace(CPU_LIKE, burst_batched_tokens=128)
    assert _steps_of_a_burst(half, prefix_caching) == [1, 1, 2, 2, 3, 3, 4, 4]


def test_engine_args_set_the_burst_and_a_budget_set_by_hand_has_none() -> None:
    assert shaped_by_args(CPU_LIKE, ["--burst-batched-tokens", "0"]).burst_batched_tokens == 0
    assert shaped_by_args(CPU_LIKE, ["--burst-batched-tokens=512"]).burst_batched_tokens == 512
    with pytest.raises(PerfModelError, match="burst-batched-tokens"):
        shaped_by_args(CPU_LIKE, ["--burst-batched-tokens", "many"])
    with pytest.raises(PerfModelError, match="burst_batched_tokens"):
        shaped_by_args(CPU_LIKE, ["--burst-batched-tokens", "-1"])
    # The engine keeps its burst only with a floor: an explicit budget has neither.
    by_hand = shaped_by_args(CPU_LIKE, ["--max-num-batched-tokens", "64"])
    no_burst = replace(by_hand, burst_batched_tokens=0)
    steps = _steps_of_a_burst(by_hand, False)  # the 48 tokens the budget leaves beside the 16 decodes a step
    assert steps == _steps_of_a_burst(no_burst, False) and steps[-1] > 8


def test_a_model_file_sets_the_burst() -> None:
    perf = perf_model_from_mapping({"engines": {"local": {"burst_batched_tokens": 0}}})
    assert perf.engine("local").burst_batched_tokens == 0
    assert perf.engine("other").burst_batched_tokens == 256


def test_the_fit_keeps_the_burst_of_the_engine_the_recording_was_made_on() -> None:
    # The fit's own terms count a pass per chunk of each prompt (counting the passes the burst shared made the
    # replay worse on the recordings: recording_fit._decode_with_passes); the fitted model keeps the burst,
    # and its source says what it assumed.
    truth = replace(CPU_LIKE, prefill_fixed_s=0.03, decode_fixed_s=0.01, decode_per_seq_s=0.002)
    records = _recorded_by(truth)
    fitted = fit_from_recording(records, "local", replace(truth, decode_fixed_s=0.5, decode_per_seq_s=0.5))
    assert fitted.burst_batched_tokens == 256 and "burst budget 256 assumed" in fitted.source
    off = fit_from_recording(records, "local", replace(truth, decode_fixed_s=0.5, burst_batched_tokens=0))
    assert off.burst_batched_tokens == 0 and "no burst budget" in off.source
