"""Which CUDA graph a decode step replays, and its inputs padded to that graph's static shapes.

Plain Python, no torch: a graph is keyed by (padded batch, block-table width); a step of n sequences
whose longest context needs m blocks takes the smallest bucket of each that holds it. Padded rows
point at the pool's scratch block (never handed out) with one visible key, so they read and write
nothing of any sequence.
"""
from __future__ import annotations

from dataclasses import dataclass

# Padded batch sizes, as vLLM captures them: every power of two to 8, then steps of 8 to 64 and 32
# beyond — at most 1/8 of a step's rows are padding from 64 sequences on.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 96, 128, 160, 192, 224, 256)
MIN_CONTEXT_BLOCKS = 16  # the narrowest block table a graph reads (256 tokens at 16 per block)


@dataclass(frozen=True)
class GraphKey:
    """One captured graph's static shapes."""

    num_seqs: int  # padded batch
    num_blocks: int  # block-table width: keys read per sequence = num_blocks * block_size


def context_buckets(max_blocks: int, min_blocks: int = MIN_CONTEXT_BLOCKS) -> tuple[int, ...]:
    """Block-table widths: powers of two from ``min_blocks``, then ``max_blocks`` (the model's context)."""
    widths, w = [], min(min_blocks, max_blocks)
    while w < max_blocks:
        widths.append(w)
        w *= 2
    return (*widths, max_blocks)


def smallest_fit(value: int, buckets: tuple[int, ...]) -> int | None:
    """The smallest bucket >= value, or None when value exceeds them all."""
    return next((b for b in buckets if b >= value), None)


def graph_key(num_seqs: int, max_context: int, *, block_size: int, batch_buckets: tuple[int, ...],
              width_buckets: tuple[int, ...]) -> GraphKey | None:
    """The graph for a decode step of ``num_seqs`` sequences whose longest context (new token included)
    is ``max_context`` tokens; None when the step is larger than every graph (it runs eagerly)."""
    b = smallest_fit(num_seqs, batch_buckets)
    w = smallest_fit(-(-max_context // block_size), width_buckets)
    return None if b is None or w is None or num_seqs < 1 else GraphKey(b, w)


@dataclass(frozen=True)
class PaddedDecode:
    """One decode step's inputs at a graph's shapes (lists; the runner copies them to static buffers)."""

    input_ids: list[int]  # (B,)
    positions: list[int]  # (B,)
    slot_mapping: list[int]  # (B,) flat slot each row's new K/V is written to
    block_tables: list[list[int]]  # (B, NB)
    context_lens: list[int]  # (B,) keys each row attends to (its position + 1)


def pad_decode(token_ids: list[int], positions: list[int], block_tables: list[list[int]], key: GraphKey, *,
               block_size: int, scratch_block: int) -> PaddedDecode:
    """Real rows first, then padded rows that touch only the scratch block.

    ``token_ids[i]`` at ``positions[i]`` is row i's new token; its table is cut to the graph's width
    (blocks past its context are masked anyway) and filled up with the scratch block.
    """
    n, B, NB = len(token_ids), key.num_seqs, key.num_blocks
    if n > B or any(p // block_size >= NB for p in positions):
        raise ValueError(f"a decode step of {n} rows up to position {max(positions, default=0)} does not fit {key}")
    tables = [list(t[:NB]) + [scratch_block] * (NB - len(t[:NB])) for t in block_tables]
    slots = [t[p // block_size] * block_size + p % block_size for t, p in zip(block_tables, positions)]
    pad = B - n
    return PaddedDecode(
        input_ids=list(token_ids) + [0] * pad, positions=list(positions) + [0] * pad,
        slot_mapping=slots + [scratch_block * block_size] * pad,
        block_tables=tables + [[scratch_block] * NB for _ in range(pad)],
        context_lens=[p + 1 for p in positions] + [1] * pad)
