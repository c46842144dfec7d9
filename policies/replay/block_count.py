"""Counts in place of contents for the simulated engine: a Sequence whose length is a number (its token
ids are kept only where the prefix cache hashes them) and, with prefix caching off, the engine's
BlockManager counting blocks instead of naming them (without the cache which block a sequence holds
never matters, only how many). The engine's own scheduler runs on both unchanged; same results as the
engine's own classes (tests/unit/policies/replay/test_block_count.py), without the per-token and
per-block list work that dominated a long replay."""
from __future__ import annotations

from local_engine.block_manager import BlockManager
from local_engine.sequence import SamplingParams, Sequence

_HELD = [0] * 4096  # block ids are all 0: only the table's length is ever read


class SimSequence(Sequence):
    """A Sequence whose `num_tokens` is a plain attribute, kept in step with every token added (by
    append_token or `add_tokens`); `token_ids` grows only when `keep_ids` (the prefix cache reads them)."""

    num_tokens = 0  # shadows Sequence.num_tokens (len(token_ids)): the scheduler reads it per sequence per step

    def __init__(self, prompt_ids: list[int], num_prompt_tokens: int, max_tokens: int, now: float,
                 keep_ids: bool) -> None:
        super().__init__(prompt_ids, SamplingParams(max_tokens=max_tokens), arrival_time=now)
        self.num_tokens = num_prompt_tokens
        self._num_prompt = num_prompt_tokens
        self.keep_ids = keep_ids

    @property
    def num_prompt_tokens(self) -> int:
        return self._num_prompt

    @property
    def num_completion_tokens(self) -> int:
        return self.num_tokens - self._num_prompt

    def append_token(self, token_id: int) -> None:
        self.num_tokens += 1
        if self.keep_ids:
            self.token_ids.append(token_id)

    def add_tokens(self, n: int, token_id: int) -> None:
        self.num_tokens += n
        if self.keep_ids:
            self.token_ids.extend([token_id] * n)


class CountingBlockManager(BlockManager):
    """BlockManager(num_blocks, block_size, enable_prefix_caching=False), by counts."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        super().__init__(1, block_size, enable_prefix_caching=False)  # the per-block lists stay unused
        self._total = num_blocks
        self._num_free = num_blocks

    @property
    def num_total_blocks(self) -> int:
        return self._total

    @property
    def num_free_blocks(self) -> int:
        return self._num_free

    @property
    def usage(self) -> float:
        return 1.0 - self._num_free / self._total

    def num_free_blocks_needed(self, seq: Sequence) -> int:
        return (seq.num_tokens + self.block_size - 1) // self.block_size

    def can_allocate(self, seq: Sequence) -> bool:
        return self.num_free_blocks_needed(seq) <= self._num_free

    def allocate(self, seq: Sequence) -> None:
        if seq.block_table:
            raise ValueError(f"sequence {seq.seq_id} already holds blocks")
        num_needed = self.num_free_blocks_needed(seq)
        if num_needed > self._num_free:
            raise ValueError(f"sequence {seq.seq_id} needs {num_needed} blocks, {self._num_free} free")
        seq.num_cached_tokens = 0
        if seq.num_prefix_hit_tokens is None:
            seq.num_prefix_hit_tokens = 0
        self._take(seq, num_needed)

    def _take(self, seq: Sequence, n: int) -> None:
        self._num_free -= n
        table = seq.block_table
        while n > 0:
            table.extend(_HELD[:n])
            n -= len(_HELD)

    def can_append(self, seq: Sequence) -> bool:
        return seq.num_tokens <= len(seq.block_table) * self.block_size or self._num_free > 0

    def may_append(self, seq: Sequence) -> None:
        if seq.num_tokens > len(seq.block_table) * self.block_size:
            if not self._num_free:
                raise KeyError("no free block")  # what the engine's OrderedDict.popitem raises
            self._take(seq, 1)

    def grow_to(self, seq: Sequence, num_tokens: int) -> None:
        """Blocks for positions up to `num_tokens` (what repeated may_append calls would take)."""
        need = (num_tokens + self.block_size - 1) // self.block_size - len(seq.block_table)
        if need > 0:
            if need > self._num_free:
                raise KeyError("no free block")
            self._take(seq, need)

    def take(self, n: int) -> None:
        """Count `n` blocks as taken by sequences whose tables are written later (policies/replay/decode_phase.py)."""
        self._num_free -= n

    def hold(self, seq: Sequence, n: int) -> None:
        """Make the sequence's table `n` blocks long, the blocks already counted by `take`."""
        short = n - len(seq.block_table)
        if short > 0:
            self._num_free += short
            self._take(seq, short)

    def deallocate(self, seq: Sequence) -> None:
        self._num_free += len(seq.block_table)
        seq.block_table.clear()
        seq.block_hashes.clear()
        seq.num_cached_tokens = 0

    def cache_full_blocks(self, seq: Sequence) -> None:
        return None
