"""What the block manager tells a router and a client about its prefix cache: the blocks it holds,
its lifetime lookup/hit counters, and each request's hit tokens as found on arrival (usage's
cached_tokens), which a later preemption does not change."""
from __future__ import annotations

from local_engine.block_manager import BlockManager
from local_engine.sequence import Sequence


def _computed(bm: BlockManager, seq: Sequence) -> None:
    seq.num_cached_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)


def test_a_repeated_prefix_is_reported_as_hit_tokens_and_counted_blocks() -> None:
    bm = BlockManager(num_blocks=20, block_size=4)
    first = Sequence(list(range(13)))
    bm.allocate(first)
    assert first.num_prefix_hit_tokens == 0 and bm.num_cached_blocks == 0
    _computed(bm, first)
    assert bm.num_cached_blocks == 3  # the three full blocks, not the partial fourth
    again = Sequence([*range(12), 99])
    bm.allocate(again)
    assert again.num_prefix_hit_tokens == 12
    assert (bm.num_queried_tokens, bm.num_hit_tokens) == (26, 12)


def test_the_hit_reported_is_the_one_found_on_arrival_not_after_a_preemption() -> None:
    bm = BlockManager(num_blocks=20, block_size=4)
    seq = Sequence(list(range(13)))
    bm.allocate(seq)
    _computed(bm, seq)
    bm.deallocate(seq)  # preempted: its own blocks are now cached, a re-admission would hit them
    bm.allocate(seq)
    assert seq.num_cached_tokens == 12 and seq.num_prefix_hit_tokens == 0


def test_without_prefix_caching_nothing_is_cached_or_hit() -> None:
    bm = BlockManager(num_blocks=20, block_size=4, enable_prefix_caching=False)
    seq = Sequence(list(range(13)))
    bm.allocate(seq)
    _computed(bm, seq)
    bm.allocate(again := Sequence(list(range(13))))
    assert bm.num_cached_blocks == 0 and again.num_prefix_hit_tokens == 0
