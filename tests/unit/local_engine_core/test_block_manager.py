"""Block manager: allocation, appends across block boundaries, freeing, and prefix-cache reuse."""
from __future__ import annotations

import pytest

from local_engine.block_manager import BlockManager
from local_engine.sequence import Sequence


def seq_of(n: int, start: int = 0) -> Sequence:
    return Sequence(list(range(start, start + n)))


def compute_all_but_last(bm: BlockManager, seq: Sequence) -> None:
    """What the engine does after a full prefill: every token but the newest has K/V."""
    seq.num_cached_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)


def test_allocate_takes_ceil_blocks_and_deallocate_returns_them() -> None:
    bm = BlockManager(num_blocks=10, block_size=4, enable_prefix_caching=False)
    seq = seq_of(9)
    assert bm.can_allocate(seq)
    bm.allocate(seq)
    assert len(seq.block_table) == 3
    assert len(set(seq.block_table)) == 3
    assert bm.num_free_blocks == 7
    assert bm.usage == pytest.approx(0.3)
    bm.deallocate(seq)
    assert seq.block_table == [] and seq.num_cached_tokens == 0
    assert bm.num_free_blocks == 10 and bm.usage == 0.0


def test_can_allocate_false_when_pool_too_small() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    seq = seq_of(9)
    assert not bm.can_allocate(seq)
    with pytest.raises(ValueError, match="needs 3 blocks, 2 free"):
        bm.allocate(seq)
    assert bm.num_free_blocks == 2


def test_may_append_adds_a_block_only_when_crossing_a_boundary() -> None:
    bm = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    seq = seq_of(4)
    bm.allocate(seq)
    seq.num_cached_tokens = 4
    seq.append_token(99)  # position 4 starts block 2
    assert bm.can_append(seq)
    bm.may_append(seq)
    assert len(seq.block_table) == 2
    seq.num_cached_tokens = 5
    seq.append_token(100)  # position 5 still in block 2
    bm.may_append(seq)
    assert len(seq.block_table) == 2
    assert bm.num_free_blocks == 2


def test_can_append_false_when_no_block_left() -> None:
    bm = BlockManager(num_blocks=1, block_size=4, enable_prefix_caching=False)
    seq = seq_of(4)
    bm.allocate(seq)
    seq.append_token(1)
    assert not bm.can_append(seq)


def test_prefix_cache_shares_computed_full_blocks() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    first = seq_of(10)
    bm.allocate(first)
    assert first.num_cached_tokens == 0
    compute_all_but_last(bm, first)  # blocks 0 and 1 are full and computed
    second = seq_of(10)
    bm.allocate(second)
    assert second.num_cached_tokens == 8
    assert second.block_table[:2] == first.block_table[:2]
    assert second.block_table[2] != first.block_table[2]
    assert bm.num_free_blocks == 10 - 3 - 1
    assert bm.prefix_cache_hit_rate == pytest.approx(8 / 20)
    bm.deallocate(first)  # shared blocks stay held by the second sequence
    assert bm.num_free_blocks == 10 - 3
    bm.deallocate(second)
    assert bm.num_free_blocks == 10


def test_prefix_cache_never_reuses_the_block_with_the_last_token() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    first = seq_of(8)
    bm.allocate(first)
    compute_all_but_last(bm, first)
    again = seq_of(8)
    bm.allocate(again)
    assert again.num_cached_tokens == 4  # the second block holds the last token: recomputed


def test_prefix_cache_needs_the_same_prefix_not_just_the_same_block() -> None:
    bm = BlockManager(num_blocks=10, block_size=4)
    first = Sequence([1, 2, 3, 4, 5, 6, 7, 8, 9])
    bm.allocate(first)
    compute_all_but_last(bm, first)
    other = Sequence([0, 0, 0, 0, 5, 6, 7, 8, 9])  # block 1 equal, block 0 differs
    bm.allocate(other)
    assert other.num_cached_tokens == 0


def test_freed_cached_blocks_are_reused_until_evicted() -> None:
    bm = BlockManager(num_blocks=3, block_size=4)
    first = seq_of(9)
    bm.allocate(first)
    compute_all_but_last(bm, first)
    bm.deallocate(first)
    again = seq_of(9)
    bm.allocate(again)
    assert again.num_cached_tokens == 8
    bm.deallocate(again)
    filler = seq_of(12, start=500)  # needs every block: evicts the cached ones
    bm.allocate(filler)
    bm.deallocate(filler)
    third = seq_of(9)
    bm.allocate(third)
    assert third.num_cached_tokens == 0


def test_uncomputed_blocks_are_not_shared() -> None:
    """A block registers only after its K/V is computed (a chunked prefill may be half done)."""
    bm = BlockManager(num_blocks=10, block_size=4)
    first = seq_of(12)
    bm.allocate(first)
    first.num_cached_tokens = 4  # first chunk done
    bm.cache_full_blocks(first)
    second = seq_of(12)
    bm.allocate(second)
    assert second.num_cached_tokens == 4
