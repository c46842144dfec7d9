"""Admission with a shared prefix: blocks a running sequence holds are shared, not taken from the free
list, so a request with the same prefix is admitted when only its own tail fits; cached blocks that
nobody holds still come from the free list; the keys are hashed once per sequence."""
from __future__ import annotations

from local_engine.block_manager import BlockManager
from local_engine.config import EngineConfig
from local_engine.scheduler import Scheduler
from local_engine.sequence import SamplingParams, Sequence, SequenceStatus

PREFIX = list(range(100, 120))  # 5 blocks of 4


def _computed(bm: BlockManager, seq: Sequence) -> None:
    seq.num_cached_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)


def test_a_prefix_held_by_a_running_sequence_needs_no_free_blocks() -> None:
    bm = BlockManager(num_blocks=7, block_size=4)
    running = Sequence([*PREFIX, 1])  # 6 blocks
    bm.allocate(running)
    _computed(bm, running)
    same = Sequence([*PREFIX, 2])  # 6 blocks, 5 of them the running one's
    assert bm.num_free_blocks == 1 and bm.num_free_blocks_needed(same) == 1 and bm.can_allocate(same)
    bm.allocate(same)
    assert same.block_table[:5] == running.block_table[:5] and same.num_cached_tokens == 20
    assert not bm.can_allocate(Sequence(list(range(21))))  # another prompt: all 6 blocks, none free


def test_cached_blocks_nobody_holds_still_come_from_the_free_list() -> None:
    bm = BlockManager(num_blocks=7, block_size=4)
    done = Sequence([*PREFIX, 1])
    bm.allocate(done)
    _computed(bm, done)
    bm.deallocate(done)  # its blocks are free again, and still cached
    again = Sequence([*PREFIX, 2])
    assert bm.num_free_blocks_needed(again) == 6
    bm.allocate(again)
    assert again.num_cached_tokens == 20 and bm.num_free_blocks == 1


def test_the_scheduler_admits_a_same_prefix_request_into_a_pool_its_whole_prompt_would_not_fit() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    sched = Scheduler(EngineConfig(block_size=4, admission_watermark=0.0), bm)
    first = Sequence([*PREFIX, 1], SamplingParams(max_tokens=50))
    sched.add(first)
    batch = sched.schedule()
    assert batch is not None and batch.seqs == (first,)
    _computed(bm, first)
    second = Sequence([*PREFIX, 2], SamplingParams(max_tokens=50))
    sched.add(second)
    sched.schedule()
    # 2 blocks free, the prompt is 6 blocks: admitted on the 5 it shares with the running one.
    assert second.status is SequenceStatus.RUNNING and second.num_prefix_hit_tokens == 20


def test_block_keys_are_hashed_once_per_sequence() -> None:
    bm = BlockManager(num_blocks=16, block_size=4)
    seq = Sequence([*PREFIX, 1])
    bm.num_free_blocks_needed(seq)
    memo = list(seq.block_key_memo)
    assert len(memo) == 5
    bm.can_allocate(seq)
    bm.allocate(seq)
    assert seq.block_key_memo == memo  # reused, not recomputed or grown
