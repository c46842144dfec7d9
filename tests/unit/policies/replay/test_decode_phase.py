"""Decode runs by counts (policies/replay/decode_phase.py): with polls between arrivals — many short runs
in a row, the free count read at each — the counting engine answers bit for bit as the per-sequence runs
on the engine's own block manager: the same free blocks, running and waiting at every poll, the same
first tokens and finishes at the same times, the same preemptions and busy time."""
from __future__ import annotations

import random
from dataclasses import replace

import pytest

from local_engine.block_manager import BlockManager
from local_engine.scheduler import Scheduler
from policies.perf_model import EngineModel
from policies.replay import engine_sim
from policies.replay.decode_phase import DecodePhase
from policies.replay.engine_sim import EngineEvent, SimEngine

# A pool small enough to preempt and batches that cross blocks often (block size 4).
MODEL = EngineModel(prefill_fixed_s=0.02, prefill_per_token_s=1e-4, decode_fixed_s=0.01, decode_per_seq_s=0.001,
                    decode_per_context_token_s=1e-6, block_size=4, num_blocks=400, max_num_seqs=12,
                    max_num_batched_tokens=128, max_waiting=1000)


def _run(counting: bool, seed: int, polls: int, num_blocks: int = 400) -> tuple:
    rng = random.Random(seed)
    model = replace(MODEL, num_blocks=num_blocks)
    engine = SimEngine(model, prefix_caching=False)
    if not counting:  # the engine's own block manager: every run goes sequence by sequence
        engine.blocks = BlockManager(num_blocks, model.block_size, enable_prefix_caching=False)
        engine.scheduler = Scheduler(engine.scheduler.config, engine.blocks)
    events: list[EngineEvent] = []
    states = []
    t = 0.0
    for i in range(120):
        gap = rng.expovariate(6.0)
        for k in range(1, polls + 1):  # polls between arrivals: runs cut short, one after another
            engine.advance(t + gap * k / (polls + 1), events)
            states.append((engine.blocks.num_free_blocks, len(engine.scheduler.running), len(engine.scheduler.waiting)))
        t += gap
        engine.advance(t, events)
        engine.submit(i, rng.randint(1, 150), rng.randint(1, 120), t)
    engine.advance(float("inf"), events)
    return ([(e.time, e.request, e.first_token) for e in events], states, engine.scheduler.num_preemptions,
            engine.busy_s, engine.blocks.num_free_blocks)


# 400 blocks: a few preemptions; 200 and 120: the pool binds most of the time (many preemptions).
@pytest.mark.parametrize(("seed", "polls", "num_blocks"), [(1, 0, 400), (2, 3, 400), (3, 7, 400), (4, 1, 200),
                                                          (5, 3, 120)])
def test_counted_runs_match_the_engines_block_manager(seed: int, polls: int, num_blocks: int) -> None:
    real, counted = _run(False, seed, polls, num_blocks), _run(True, seed, polls, num_blocks)
    assert real[1] == counted[1]  # free blocks, running, waiting at every poll
    assert real[0] == counted[0] and len(real[0]) == 240  # every first token and finish, bit for bit
    assert real[2:] == counted[2:]  # preemptions, busy seconds, blocks all free at the end
    assert counted[4] == num_blocks


def test_the_phase_runs_the_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The equality above covers decode_phase.py only if the counting engine's runs go through it."""
    runs = {"phase": 0, "per_sequence": 0}
    phase_run, decode_run = DecodePhase.run, SimEngine._decode_run

    def counted(self, *args):  # noqa: ANN001, ANN202
        runs["phase"] += 1
        return phase_run(self, *args)

    def per_sequence(self, *args):  # noqa: ANN001, ANN202
        runs["per_sequence"] += 1
        return decode_run(self, *args)

    monkeypatch.setattr(DecodePhase, "run", counted)
    monkeypatch.setattr(engine_sim.SimEngine, "_decode_run", per_sequence)
    assert _run(True, 2, 3)[2] > 0  # it preempted: the scheduler had its turns between phases
    assert runs["phase"] > 10 * runs["per_sequence"] > 0


def test_a_prompt_joining_a_phase_takes_its_blocks_on_the_steps_a_phase_started_with_it_would() -> None:
    """DecodePhase.add against DecodePhase.start: after k steps of a phase over one sequence, a prompt of
    c tokens joins; from then on the blocks taken per step and the finishes equal those of a phase started
    at that moment over both (as written back): for every k and c around block boundaries (block size 4)."""
    from policies.replay.block_count import CountingBlockManager, SimSequence

    def decoding(bm: CountingBlockManager, computed: int) -> SimSequence:
        seq = SimSequence([], computed, 100, 0.0, False)
        bm.allocate(seq)  # its prompt's blocks, then its first token sampled
        seq.num_cached_tokens, seq.num_tokens = computed, computed + 1
        return seq

    def steps(phase: DecodePhase, bm: CountingBlockManager, n: int) -> list[tuple[int, list[int]]]:
        out = []
        for _ in range(n):
            need = phase.next_blocks()
            bm.take(need)
            out.append((need, [s.seq_id for s in phase.step()]))
        return out

    joined = 0
    for k in range(9):
        for c in range(1, 14):
            bm = CountingBlockManager(1000, 4)
            first = decoding(bm, 6)
            phase = DecodePhase.start([first], {first.seq_id: 15}, bm)
            assert phase is not None
            steps(phase, bm, k)
            second = decoding(bm, c)
            if not phase.add(second, 7):
                assert (len(second.block_table) * 4 - c) % 4 == 0  # refused only with a whole free block
                continue
            joined += 1
            phase.write_back({})
            fresh = DecodePhase.start([first, second], {first.seq_id: 15 - k, second.seq_id: 7}, bm)
            assert fresh is not None
            bm_free = bm.num_free_blocks
            got = steps(phase, bm, 12)
            bm._num_free = bm_free  # noqa: SLF001 - the same pool for the fresh phase
            assert got == steps(fresh, bm, 12)
    assert joined > 80
