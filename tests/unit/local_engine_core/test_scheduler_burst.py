"""The burst budget: several new prompts waiting beside running decodes are admitted at up to
burst_batched_tokens a step (64 per waiting prompt); one prompt arriving alone keeps the 64-token floor."""
from __future__ import annotations

import pytest

from local_engine.config import ConfigError, EngineConfig
from local_engine.scheduler import Scheduler
from local_engine.sequence import Sequence

from .test_scheduler import advance, make, seq_of


def _decoding(sched: Scheduler, n: int) -> list[Sequence]:
    running = [seq_of(2) for _ in range(n)]
    for s in running:
        sched.add(s)
    advance(sched.schedule())  # prefilled in one idle step: they decode from the next
    return running


def test_a_burst_of_new_prompts_beside_decodes_is_admitted_at_the_burst_budget() -> None:
    sched = make(num_blocks=2000, block_size=16, max_num_seqs=64)  # default budget: floor 64, burst 256
    _decoding(sched, 16)
    burst = [seq_of(128) for _ in range(6)]
    for s in burst:
        sched.add(s)
    batch = sched.schedule()
    assert batch.num_decodes == 16 and batch.seqs[16:] == tuple(burst[:2])
    assert batch.num_scheduled_tokens[16:] == (128, 128)  # 256 prompt tokens, not the floor's 64
    advance(batch)
    batch = sched.schedule()
    assert batch.seqs[18:] == tuple(burst[2:4]) and batch.num_scheduled_tokens[18:] == (128, 128)
    advance(batch)
    batch = sched.schedule()  # two wait: 64 tokens each
    assert batch.seqs[20:] == (burst[4],) and batch.num_scheduled_tokens[20:] == (128,)


def test_one_prompt_arriving_alone_keeps_the_floor_and_the_burst_can_be_off() -> None:
    sched = make(num_blocks=2000, block_size=16, max_num_seqs=64)
    _decoding(sched, 8)
    long = seq_of(4000)
    sched.add(long)
    batch = sched.schedule()  # the long-prompt stall: a bounded chunk a step
    assert batch.seqs[8:] == (long,) and batch.num_scheduled_tokens[8:] == (64,)
    advance(batch)
    sched.add(seq_of(128))
    sched.add(seq_of(128))
    batch = sched.schedule()  # the long prompt's chunk stays at the floor; the burst (64 a waiting prompt) the rest
    assert batch.num_scheduled_tokens[8] == 64 and sum(batch.num_scheduled_tokens[9:]) == 2 * 64 - 64
    off = make(num_blocks=2000, block_size=16, max_num_seqs=64, burst_batched_tokens=0)
    _decoding(off, 8)
    for _ in range(4):
        off.add(seq_of(128))
    assert off.schedule().total_tokens == 8 + 64


def test_a_negative_burst_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="burst_batched_tokens"):
        EngineConfig(burst_batched_tokens=-1)
