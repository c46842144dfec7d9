"""The KV block pool's bookkeeping: which block ids are free, who holds which, and prefix-cache reuse.

Pure Python over ids (no torch): the runner owns the tensors, this owns the numbers.
"""
from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence as Ids

from local_engine.sequence import Sequence

BlockKey = bytes  # SHA-256 of the parent block's key and this block's token ids: the whole prefix

# Parent key of a sequence's first block; a chain of keys then identifies each block's whole prefix.
ROOT_KEY: BlockKey = hashlib.sha256(b"hybridgw prefix cache v1").digest()


def block_key(parent: BlockKey, token_ids: Ids[int]) -> BlockKey:
    """The prefix-cache key of a block: a cryptographic hash, so a client cannot craft a prompt whose
    block collides with another's (Python's hash() of a tuple can be; vLLM CVE-2025-25183) and be
    served that prompt's K/V. ~1 µs per 16-token block; the same in every process (no hash seed)."""
    return hashlib.sha256(parent + array("I", token_ids).tobytes()).digest()


class _Block:
    __slots__ = ("block_id", "key", "ref_count")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_count = 0
        self.key: BlockKey | None = None  # set while the block's K/V is registered for reuse


class BlockManager:
    """Hands out fixed-size KV blocks to sequences and takes them back.

    With prefix caching, a full block whose K/V has been computed is registered under its
    prefix key (block_key); a later sequence with the same prefix shares it (ref counted)
    instead of recomputing. Freed registered blocks stay reusable until a fresh allocation needs
    them; they are evicted oldest-freed first.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks ({num_blocks}) and block_size ({block_size}) must be > 0")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block(i) for i in range(num_blocks)]
        # Insertion order = order freed, so popping from the front evicts the least recently used.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._cached: dict[BlockKey, int] = {}
        self.num_queried_tokens = 0  # prompt tokens looked up in the prefix cache
        self.num_hit_tokens = 0  # of those, tokens found cached

    @property
    def num_total_blocks(self) -> int:
        return len(self._blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks registered for reuse (held or free-but-not-yet-evicted)."""
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Share of blocks held by live sequences (0.0 – 1.0)."""
        return 1.0 - len(self._free) / len(self._blocks)

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_queried_tokens if self.num_queried_tokens else 0.0

    def num_blocks_for(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def first_block_key(self, seq: Sequence) -> BlockKey | None:
        """The key of the sequence's first reusable block; None without one (or with caching off)."""
        if not self.enable_prefix_caching or (seq.num_tokens - 1) // self.block_size < 1:
            return None
        return block_key(ROOT_KEY, seq.token_ids[:self.block_size])

    def is_cached(self, key: BlockKey) -> bool:
        return key in self._cached

    def num_free_blocks_needed(self, seq: Sequence) -> int:
        """Free blocks allocate(seq) takes: all its blocks but the leading cached ones that running
        sequences hold (shared, not taken from the free list). Cached blocks in the free list still
        count: taking them is taking free blocks. Held blocks cannot be evicted before allocate()."""
        num_needed = self.num_blocks_for(seq.num_tokens)
        if not self.enable_prefix_caching:
            return num_needed
        held = 0
        for key in self._candidate_keys(seq):
            block_id = self._cached.get(key)
            if block_id is None:
                break
            held += self._blocks[block_id].ref_count > 0
        return num_needed - held

    def _candidate_keys(self, seq: Sequence) -> list[bytes]:
        """Keys of the blocks a prefix hit may cover: every full block but the last token's (its
        logits must be computed to sample), hashed once per sequence."""
        bs, tokens, memo = self.block_size, seq.token_ids, seq.block_key_memo
        num_candidates = (len(tokens) - 1) // bs
        for i in range(len(memo), num_candidates):
            memo.append(block_key(memo[-1] if memo else ROOT_KEY, tokens[i * bs:(i + 1) * bs]))
        return memo[:num_candidates]

    def can_allocate(self, seq: Sequence) -> bool:
        return self.num_free_blocks_needed(seq) <= len(self._free)

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens; cached prefix blocks set num_cached_tokens."""
        if seq.block_table:
            raise ValueError(f"sequence {seq.seq_id} already holds blocks")
        num_needed = self.num_blocks_for(seq.num_tokens)
        if self.num_free_blocks_needed(seq) > len(self._free):
            raise ValueError(f"sequence {seq.seq_id} needs {num_needed} blocks, {len(self._free)} free")
        if self.enable_prefix_caching:
            self._reuse_cached_prefix(seq)
        seq.num_cached_tokens = len(seq.block_table) * self.block_size
        if seq.num_prefix_hit_tokens is None:  # what the request found on arrival (not after a preemption)
            seq.num_prefix_hit_tokens = seq.num_cached_tokens
        while len(seq.block_table) < num_needed:
            seq.block_table.append(self._take_free())

    def _reuse_cached_prefix(self, seq: Sequence) -> None:
        for key in self._candidate_keys(seq):
            block_id = self._cached.get(key)
            if block_id is None:
                break
            self._hold(block_id)
            seq.block_table.append(block_id)
            seq.block_hashes.append(key)
        self.num_queried_tokens += len(seq.token_ids)
        self.num_hit_tokens += len(seq.block_table) * self.block_size

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's newly computed full blocks for reuse (call after its K/V is written)."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        num_full = seq.num_cached_tokens // bs
        tokens = seq.token_ids
        for i in range(len(seq.block_hashes), num_full):
            parent = seq.block_hashes[-1] if seq.block_hashes else ROOT_KEY
            key = block_key(parent, tokens[i * bs:(i + 1) * bs])
            block = self._blocks[seq.block_table[i]]
            if key not in self._cached and block.key is None:
                self._cached[key] = block.block_id
                block.key = key
            seq.block_hashes.append(key)

    def can_append(self, seq: Sequence) -> bool:
        """Whether the sequence's next uncomputed token has (or can get) a slot."""
        return seq.num_tokens <= len(seq.block_table) * self.block_size or bool(self._free)

    def may_append(self, seq: Sequence) -> None:
        """Add a block when the sequence's last token crosses into a new block."""
        if seq.num_tokens > len(seq.block_table) * self.block_size:
            seq.block_table.append(self._take_free())

    def deallocate(self, seq: Sequence) -> None:
        """Take back all the sequence's blocks (finish, abort or preemption); it must recompute later."""
        # Tail blocks first, so the least shared ones are evicted first.
        for block_id in reversed(seq.block_table):
            block = self._blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self._free[block_id] = None
        seq.block_table.clear()
        seq.block_hashes.clear()
        seq.num_cached_tokens = 0

    def _hold(self, block_id: int) -> None:
        block = self._blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1

    def _take_free(self) -> int:
        block_id, _ = self._free.popitem(last=False)
        block = self._blocks[block_id]
        if block.key is not None:  # evict: its K/V is about to be overwritten
            del self._cached[block.key]
            block.key = None
        block.ref_count = 1
        return block_id
