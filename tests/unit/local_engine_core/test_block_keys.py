"""Prefix-cache block keys: a SHA-256 chain over the parent key and the block's token ids, so equal
prefixes share blocks, different ones never do, and no process's hash seed changes a key."""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys

from local_engine.block_manager import ROOT_KEY, BlockManager, block_key
from local_engine.sequence import Sequence

BS = 4


def _prefilled(bm: BlockManager, token_ids: list[int]) -> Sequence:
    """A sequence allocated, prefilled and registered, as the engine does it."""
    seq = Sequence(token_ids)
    bm.allocate(seq)
    seq.num_cached_tokens = seq.num_tokens
    bm.cache_full_blocks(seq)
    return seq


def _hit_tokens(bm: BlockManager, token_ids: list[int]) -> int:
    seq = Sequence(token_ids)
    bm.allocate(seq)
    hit = seq.num_cached_tokens
    bm.deallocate(seq)
    return hit


def test_the_key_is_sha256_of_the_parent_key_and_the_token_ids() -> None:
    tokens = [1, 2, 70000, 49151]
    expected = hashlib.sha256(ROOT_KEY + struct.pack("<4I", *tokens)).digest()
    assert block_key(ROOT_KEY, tokens) == expected and len(expected) == 32
    assert block_key(expected, tokens) != expected  # chained: the same tokens after another prefix differ


def test_equal_prefixes_share_blocks_and_different_ones_do_not() -> None:
    bm = BlockManager(num_blocks=32, block_size=BS)
    first = list(range(100, 113))  # 3 full blocks + 1 token
    _prefilled(bm, first)
    assert _hit_tokens(bm, first) == 3 * BS  # the block with the last token is always computed
    assert _hit_tokens(bm, first[:8] + [999] * 5) == 2 * BS  # shares the first two blocks only
    assert _hit_tokens(bm, [first[0] + 1] + first[1:]) == 0  # one token off in the first block: nothing
    # The second block alone matches, but after a different first block it is a different prefix.
    assert _hit_tokens(bm, [7, 7, 7, 7] + first[4:]) == 0


def test_sequences_record_the_chain_of_their_block_keys() -> None:
    bm = BlockManager(num_blocks=16, block_size=BS)
    seq = _prefilled(bm, list(range(9)))
    k1 = block_key(ROOT_KEY, [0, 1, 2, 3])
    assert seq.block_hashes == [k1, block_key(k1, [4, 5, 6, 7])]
    assert bm.first_block_key(Sequence(list(range(9)))) == k1


def test_keys_do_not_depend_on_the_python_hash_seed() -> None:
    code = ("from local_engine.block_manager import ROOT_KEY, block_key; "
            "k = block_key(ROOT_KEY, [5, 6, 7, 8]); print(block_key(k, [1, 2, 3, 4]).hex())")
    seen = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        seen.add(out.stdout.strip())
    assert seen == {block_key(block_key(ROOT_KEY, [5, 6, 7, 8]), [1, 2, 3, 4]).hex()}
