"""Counts in place of contents: the simulated engine with the counting block manager and token counts
(prefix caching off) schedules exactly as with the engine's own BlockManager and token lists."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from local_engine.block_manager import BlockManager
from local_engine.scheduler import Scheduler
from local_engine.sequence import Sequence
from policies.perf_model import EngineModel
from policies.replay.block_count import CountingBlockManager, SimSequence
from policies.replay.engine_sim import EngineEvent, SimEngine

# Small pool and batch: the traffic below queues, mixes prefills into decode steps and preempts.
MODEL = EngineModel(prefill_fixed_s=0.02, prefill_per_token_s=1e-4, decode_fixed_s=0.01, decode_per_seq_s=0.001,
                    decode_per_context_token_s=1e-6, num_blocks=120, max_num_seqs=8, max_num_batched_tokens=96,
                    max_waiting=1000)


# ... and with a floor of 32 prompt tokens a step and a burst budget of 128 (as the engine's default budget).
BURST = replace(MODEL, prefill_floor_tokens=32, burst_batched_tokens=128)


def _run(counting: bool, seed: int,
         model: EngineModel = MODEL) -> tuple[list[tuple[float, int, bool]], list[tuple[int, int, int]], int]:
    """Poisson arrivals of distinct prompts; the engine advanced at each arrival and at 'polls'."""
    rng = random.Random(seed)
    engine = SimEngine(model, prefix_caching=False)
    if not counting:  # the engine's own block manager, caching off as well
        engine.blocks = BlockManager(model.num_blocks, model.block_size, enable_prefix_caching=False)
        floor, burst = engine.scheduler.prefill_floor, engine.scheduler.burst_tokens
        engine.scheduler = Scheduler(engine.scheduler.config, engine.blocks)
        engine.scheduler.prefill_floor, engine.scheduler.burst_tokens = floor, burst
    events: list[EngineEvent] = []
    states = []
    t = 0.0
    for i in range(150):
        t += rng.expovariate(8.0)
        engine.advance(t, events)
        prompt = rng.randint(1, 300)
        engine.submit(i, prompt, rng.randint(1, 200), t)
        if i % 3 == 0:
            engine.advance(t + 0.05, events)
        states.append((engine.blocks.num_free_blocks, len(engine.scheduler.running), len(engine.scheduler.waiting)))
    engine.advance(float("inf"), events)
    return [(e.time, e.request, e.first_token) for e in events], states, engine.scheduler.num_preemptions


@pytest.mark.parametrize(("seed", "model"), [(1, MODEL), (2, MODEL), (3, MODEL), (1, BURST), (2, BURST)])
def test_counting_engine_schedules_exactly_as_the_engines_own_block_manager(seed: int,
                                                                           model: EngineModel) -> None:
    real, counted = _run(False, seed, model), _run(True, seed, model)
    assert BURST.burst_batched_tokens and SimEngine(BURST, False).scheduler.burst_tokens == 128
    assert isinstance(SimEngine(MODEL, False).blocks, CountingBlockManager)
    assert real[2] == counted[2] > 0  # the same preemptions
    assert real[1] == counted[1]  # the same free blocks, running and waiting after every arrival
    assert real[0] == counted[0]  # every first token and finish at the same time, bit for bit
    assert len(real[0]) == 300


def test_counting_block_manager_answers_as_the_engines_own() -> None:
    real, counted = BlockManager(10, 16, enable_prefix_caching=False), CountingBlockManager(10, 16)
    a, b = Sequence([1] * 40), SimSequence([], 40, 16, 0.0, keep_ids=False)
    for bm, seq in ((real, a), (counted, b)):
        assert bm.num_free_blocks_needed(seq) == 3 and bm.can_allocate(seq)
        bm.allocate(seq)
        for _ in range(9):
            seq.append_token(0)
            bm.may_append(seq)
        assert (len(seq.block_table), bm.num_free_blocks, bm.usage) == (4, 6, pytest.approx(0.4))
        big = Sequence([1] * 200) if bm is real else SimSequence([], 200, 16, 0.0, keep_ids=False)
        assert not bm.can_allocate(big)
        with pytest.raises(ValueError):
            bm.allocate(big)
        bm.deallocate(seq)
        assert (seq.block_table, bm.num_free_blocks, seq.num_cached_tokens) == ([], 10, 0)
    assert a.num_tokens == b.num_tokens == 49 and b.num_completion_tokens == 9


def test_a_prompt_whose_last_token_is_decoded_still_gets_its_first_token() -> None:
    # Budget 96 with one sequence decoding: a 96-token prompt is prefilled 95 at once, its last token
    # goes through the next decode step (as the scheduler does) — and that step samples its first token.
    engine = SimEngine(MODEL, prefix_caching=False)
    events: list[EngineEvent] = []
    engine.submit(0, 30, 100, 0.0)
    engine.advance(0.5, events)
    engine.submit(1, 96, 3, 0.5)
    engine.advance(float("inf"), events)
    firsts = sorted(e.request for e in events if e.first_token)
    finishes = sorted(e.request for e in events if not e.first_token)
    assert firsts == finishes == [0, 1]
    first = {e.request: e.time for e in events if e.first_token}
    last = {e.request: e.time for e in events if not e.first_token}
    assert all(first[r] < last[r] for r in (0, 1))


def test_the_bulk_decode_pass_is_what_the_counting_engine_mostly_schedules_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above covers policies/replay/fast_schedule.py only if its bulk path runs: it must
    answer most of the counting engine's steps itself, and leave the rest (preemptions) to the engine's."""
    from policies.replay import engine_sim, fast_schedule

    calls = {"steps": 0, "engine": 0}
    bulk, engine_schedule = fast_schedule.schedule, Scheduler.schedule

    def counted(scheduler: Scheduler, blocks: CountingBlockManager):  # noqa: ANN202
        calls["steps"] += 1
        return bulk(scheduler, blocks)

    def by_engine(self: Scheduler):  # noqa: ANN202
        calls["engine"] += 1
        return engine_schedule(self)

    monkeypatch.setattr(engine_sim, "schedule", counted)
    monkeypatch.setattr(Scheduler, "schedule", by_engine)
    assert _run(True, 1)[2] > 0  # it preempted: the engine's own loop had its turns
    assert 0 < calls["engine"] < calls["steps"] / 2


def test_mixed_steps_keep_the_decode_phase_in_the_equality_above(monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above covers the phase-kept mixed step (prompts joining a running DecodePhase) only
    if it runs: most arrivals' mixed steps take it, the scheduler the rest (preemptions, queues)."""
    from policies.replay import engine_sim

    kept = {True: 0, False: 0}
    mixed = engine_sim.SimEngine._phased_mixed  # noqa: SLF001

    def counted(self, phase, events):  # noqa: ANN001, ANN202
        done = mixed(self, phase, events)
        kept[done] += 1
        return done

    monkeypatch.setattr(engine_sim.SimEngine, "_phased_mixed", counted)
    assert _run(True, 1)[2] > 0
    assert kept[True] >= 50 and kept[False] > 0


def test_a_mixed_step_that_ends_every_decode_leaves_the_next_step_to_the_scheduler() -> None:
    """Inside a phase, a mixed step whose decodes all finish and whose prompt ends at its first token
    leaves nothing running while a prompt still waits (no slot was free): the next step is the engine's
    idle prefill, not a mixed step with no decodes (same events as with the engine's own block manager)."""
    model = EngineModel(prefill_fixed_s=0.02, prefill_per_token_s=1e-4, decode_fixed_s=0.01, decode_per_seq_s=0.001,
                        decode_per_context_token_s=1e-6, num_blocks=120, max_num_seqs=2, max_num_batched_tokens=96,
                        max_waiting=1000)

    def run(counting: bool) -> list[tuple[float, int, bool]]:
        engine = SimEngine(model, prefix_caching=False)
        if not counting:
            engine.blocks = BlockManager(model.num_blocks, model.block_size, enable_prefix_caching=False)
            engine.scheduler = Scheduler(engine.scheduler.config, engine.blocks)
        events: list[EngineEvent] = []
        engine.submit(0, 10, 3, 0.0)  # its first token at 0.021, then a phase (its last token at the mixed step)
        engine.advance(0.021, events)
        engine.submit(1, 40, 1, 0.021)  # takes the second slot; done at its first token
        engine.submit(2, 300, 5, 0.021)  # no slot free at that step: waits
        engine.submit(3, 30, 2, 0.021)
        engine.advance(float("inf"), events)
        return [(e.time, e.request, e.first_token) for e in events]

    real = run(False)
    assert run(True) == real and len(real) == 8
