"""The CPU engine's default step budget in the replay: 64 tokens, and however many sequences decode, 64
prompt tokens more (local_engine/config.py). Without it the simulated engine took whole prompts in one
step and never queued a busy period; and a recording's decode steps hold those prompt passes, which the
fit takes out (the simulator adds them again). The engine here has no burst budget (--burst-batched-tokens 0,
as before 2026-12-02): its passes are one prompt's chunks each (test_burst.py has the burst)."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from policies.perf_model import EngineModel, engine_ttft
from policies.replay.engine_args import shaped_by_args
from policies.replay.engine_sim import EngineEvent, SimEngine
from policies.replay.recording_fit import _decode_with_passes, _served, fit_from_recording
from policies.replay.traffic import Recorded, TrafficRecord

# A pass of prompt tokens costs 0.1 s, a decode step 0.01 s whatever the batch.
CPU_LIKE = EngineModel(source="test", prefill_fixed_s=0.1, prefill_per_token_s=0.0, decode_fixed_s=0.01,
                       decode_per_seq_s=0.0, decode_per_context_token_s=0.0, num_blocks=4096, max_model_len=4096,
                       max_num_batched_tokens=64, prefill_floor_tokens=64, burst_batched_tokens=0)


def _ttft_behind_40_decodes(model: EngineModel) -> float:
    engine, events = SimEngine(model, False), []  # type: ignore[var-annotated]
    for i in range(40):
        engine.submit(i, 4, 10_000, 0.0)  # they decode for the whole test
    engine.advance(1.0, events)
    engine.submit(40, 200, 5, 1.0)
    engine.advance(10.0, events)
    return next(e.time for e in events if isinstance(e, EngineEvent) and e.request == 40 and e.first_token) - 1.0


def test_a_prompt_behind_running_decodes_gets_the_floor_each_step() -> None:
    # 200 tokens in chunks of 64 beside the 40 decodes: 4 mixed steps of 0.1 s, one pass each (the decodes
    # ride in the prefill's pass), after the step in progress; with the 24 tokens the budget leaves (no
    # floor), 9 of them.
    assert 0.40 <= _ttft_behind_40_decodes(CPU_LIKE) <= 0.40 + 0.01 + 1e-9
    assert _ttft_behind_40_decodes(replace(CPU_LIKE, prefill_floor_tokens=0)) >= 0.9
    assert engine_ttft(CPU_LIKE, prompt_tokens=200, num_running=40) == pytest.approx((1 + 4) * 0.01 + 4 * 0.09)
    assert engine_ttft(replace(CPU_LIKE, prefill_floor_tokens=0), prompt_tokens=200,
                       num_running=40) == pytest.approx((1 + 9) * 0.01 + 9 * 0.09)


def test_a_budget_set_by_hand_has_no_floor() -> None:
    assert shaped_by_args(CPU_LIKE, ["--max-num-batched-tokens", "256"]).prefill_floor_tokens == 0
    assert shaped_by_args(CPU_LIKE, ["--max-num-seqs", "16"]).prefill_floor_tokens == 64


def _recorded_by(truth: EngineModel, quiet_s: float = 10.0) -> list[TrafficRecord]:
    """10 s at 20 requests/s, `quiet_s` at 1/s, served by the simulated `truth`, as the ledger would keep it."""
    rng, t, requests = random.Random(1), 0.0, []
    while t < 10 + quiet_s:
        t += rng.expovariate(20.0 if t < 10 else 1.0)
        requests.append((t, rng.randint(20, 150), rng.randint(5, 60)))
    engine, events = SimEngine(truth, False), []  # type: ignore[var-annotated]
    for i, (at, prompt, output) in enumerate(requests):
        engine.advance(at, events)
        engine.submit(i, prompt, output, at)
    engine.advance(float("inf"), events)
    first = {e.request: e.time for e in events if e.first_token}
    end = {e.request: e.time for e in events if not e.first_token}
    return [TrafficRecord(1e9 + at, "t", "chat", prompt, output, recorded=Recorded(
        "local", "ok", 0.0, first[i] - at, end[i] - at)) for i, (at, prompt, output) in enumerate(requests)]


def test_the_decode_fit_takes_out_the_prompt_passes_that_ran_beside_it() -> None:
    # A known engine: decode 10 ms + 2 ms a sequence, a prompt pass 30 ms.
    truth = replace(CPU_LIKE, prefill_fixed_s=0.03, decode_fixed_s=0.01, decode_per_seq_s=0.002)
    fitted = fit_from_recording(_recorded_by(truth), "local", replace(truth, decode_fixed_s=0.5, decode_per_seq_s=0.5))
    assert "less the prefill passes" in fitted.source
    # Counted in, the passes had made the fixed step 34 ms and the prefill 1 ms (scaled from it).
    assert fitted.decode_fixed_s == pytest.approx(0.01, abs=0.003)
    assert fitted.decode_per_seq_s == pytest.approx(0.002, rel=0.1)
    assert fitted.prefill_time(64) == pytest.approx(0.03, rel=0.3)


def test_a_step_that_does_not_grow_with_the_batch_keeps_the_passes_apart() -> None:
    truth = replace(CPU_LIKE, prefill_fixed_s=0.03, decode_fixed_s=0.02, decode_per_seq_s=0.0)
    fitted = fit_from_recording(_recorded_by(truth), "local", replace(truth, decode_fixed_s=0.5, decode_per_seq_s=0.5))
    assert "less the prefill passes" in fitted.source and fitted.decode_per_seq_s < 0.0002
    assert fitted.decode_fixed_s == pytest.approx(0.02, abs=0.004)
    assert fitted.prefill_time(64) == pytest.approx(0.03, rel=0.4)  # from the passes (few idle): 20 ms here


def test_a_prompt_slope_steeper_than_the_passes_showed_is_time_outside_the_engine() -> None:
    # A known engine (a pass of 64 prompt tokens adds 0.1 ms a token beside the decodes) behind 1 ms a prompt
    # token outside it (tokenizing, HTTP: it delays the client, holds no step). The idle arrivals' TTFT rises
    # 1.1 ms a token; charged to every step, a chunk beside the decodes cost 70 ms where the decodes show 6.4.
    truth = replace(CPU_LIKE, prefill_fixed_s=0.01, prefill_per_token_s=0.0001, decode_fixed_s=0.01,
                    decode_per_seq_s=0.002)
    records = [replace(r, recorded=replace(r.recorded, ttft_s=r.recorded.ttft_s + 0.001 * r.prompt_tokens,
                                           e2e_s=r.recorded.e2e_s + 0.001 * r.prompt_tokens))
               for r in _recorded_by(truth, 30.0) if r.recorded is not None]
    fitted = fit_from_recording(records, "local", replace(truth, decode_fixed_s=0.5, decode_per_seq_s=0.5))
    assert "idle arrivals" in fitted.source
    assert fitted.mixed_time(10, 0, 64) == pytest.approx(truth.mixed_time(10, 0, 64), rel=0.25)
    quiet = [r for r in records if r.time > 1e9 + 20]  # long after the busy period's queue: idle arrivals
    fitted_mean = sum(fitted.request_overhead_s + fitted.prefill_time(r.prompt_tokens) for r in quiet) / len(quiet)
    assert fitted_mean == pytest.approx(sum(r.recorded.ttft_s for r in quiet) / len(quiet), rel=0.1)  # kept


def test_a_prompt_pass_is_never_dearer_than_a_whole_prefill_of_an_idle_engine() -> None:
    # Where the batch and the prompt passes move together, the decodes' three-term fit can charge a pass
    # what the batch cost (run j: 24 ms a pass and 0.17 ms a sequence, where the arrivals that found the engine
    # idle had a 64-token prompt's first token in 19 ms, overhead included). A pass is held to that bound and
    # the batch terms fitted again beside it. Here: a known engine's recording (a pass 30 ms), bound at 20 ms.
    truth = replace(CPU_LIKE, prefill_fixed_s=0.03, decode_fixed_s=0.01, decode_per_seq_s=0.002)
    served = _served(_recorded_by(truth), "local")
    free = _decode_with_passes(served, 64)
    assert free is not None and free[2] == pytest.approx(0.03 - 0.01, rel=0.3)  # what a pass adds to a step
    bounded = _decode_with_passes(served, 64, max_pass=0.01)
    assert bounded is not None and bounded[2] == 0.01
    assert bounded[1] > free[1]  # the time the pass may not take goes back to the batch terms
    assert _decode_with_passes(served, 64, max_pass=1.0) == free  # a bound above it changes nothing


def _ttft_of_last_of(model: EngineModel, prompts: int, size: int) -> float:
    """The last of `prompts` new prompts of `size` tokens, sent at once beside 40 running decodes."""
    engine, events = SimEngine(model, False), []  # type: ignore[var-annotated]
    for i in range(40):
        engine.submit(i, 4, 10_000, 0.0)
    engine.advance(1.0, events)
    for k in range(prompts):
        engine.submit(40 + k, size, 5, 1.0)
    engine.advance(20.0, events)
    last = 39 + prompts
    return next(e.time for e in events if isinstance(e, EngineEvent) and e.request == last and e.first_token) - 1.0


@pytest.mark.parametrize(("prompts", "size"), [(2, 200), (3, 64), (4, 200), (6, 100), (8, 40)])
def test_the_routers_ttft_counts_the_engines_burst_budget(prompts: int, size: int) -> None:
    # Several new prompts waiting beside decodes take up to min(256, 64 × those waiting) tokens a step (the
    # engine's --burst-batched-tokens): 6 prompts of 100 are prefilled in 5 steps, not 10. engine_ttft (the
    # router's prediction) follows the simulated engine's scheduler (the engine's own) within one pass (the
    # queue is counted in tokens, as LiveState gives it, not prompt by prompt); without the burst, exactly.
    burst = replace(CPU_LIKE, burst_batched_tokens=256)
    for model, slack in ((burst, 0.1 + 1e-9), (CPU_LIKE, 1e-9)):
        predicted = engine_ttft(model, prompt_tokens=size, queued_prompt_tokens=(prompts - 1) * size, num_running=40)
        assert abs(predicted - _ttft_of_last_of(model, prompts, size)) <= slack


def test_without_idle_arrivals_a_pass_costs_what_the_passes_showed_whatever_the_profiles_slope() -> None:
    # A busy recording (few arrivals found the engine idle): the prefill comes from the passes beside the
    # decodes (30 ms a 64-token chunk adds here). A profile taken on a loaded host gave 1.5 ms a token: kept,
    # a chunk cost 96 ms a pass however cheap the recording's passes were (run b: 99 ms where they showed 25).
    truth = replace(CPU_LIKE, prefill_fixed_s=0.03, decode_fixed_s=0.01, decode_per_seq_s=0.002)
    records = _recorded_by(truth, 0.0)
    fitted = fit_from_recording(records, "local", replace(truth, prefill_per_token_s=0.0015))
    assert "prefill from the passes" in fitted.source
    shown = _decode_with_passes(_served(records, "local"), 64)
    assert shown is not None
    assert fitted.mixed_time(10, 0, 64) - fitted.decode_time(10, 0) == pytest.approx(shown[2], rel=1e-6)
