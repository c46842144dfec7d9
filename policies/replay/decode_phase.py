"""The simulated engine's decode runs by counts: while nothing waits and every running sequence decodes,
each step adds one token to all of them, so the phase keeps one step counter instead of touching every
sequence per run. The block manager's free count is kept exact run by run (a closed form of the blocks
the sequences cross into); a sequence's own fields are written back when it finishes or the scheduler
runs. Counting block manager only; the same clock, events and counts as the per-sequence runs
(tests/unit/policies/replay/test_block_count.py checks it against the engine's own block manager)."""
from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence as Seqs

from local_engine.sequence import Sequence
from policies.perf_model import EngineModel
from policies.replay.block_count import CountingBlockManager


class DecodePhase:
    """Sequences decoding in lockstep since the phase began, `steps` steps ago. For a sequence holding
    L blocks with c tokens computed, d = L × block_size − c slots are free in its blocks; after S steps
    it holds max(L, ceil((c + S) / block_size)) blocks. With 0 ≤ d ≤ block_size, the blocks all of them
    took beyond their own by step S ≥ 1 are n × Q + #{d ≤ R}, where S − 1 = Q × block_size + R."""

    def __init__(self, seqs: tuple[Sequence, ...], cached: list[int], held: list[int], free_slots: list[int],
                 left: list[int], blocks: CountingBlockManager) -> None:
        self.seqs: list[Sequence] = list(seqs)
        self.cached, self.held, self.free_slots, self.left = cached, held, free_slots, left
        self.blocks, self.size = blocks, blocks.block_size
        self.steps = 0
        self.n = len(seqs)
        self.tokens = sum(cached) + self.n  # each holds its computed tokens and the one it decodes next
        self._cumulate(free_slots)
        self._ends = [(n, i) for i, n in enumerate(left)]  # (tokens left, place in the batch)
        heapq.heapify(self._ends)

    @classmethod
    def start(cls, seqs: Seqs[Sequence], left: dict[int, int], blocks: CountingBlockManager) -> DecodePhase | None:
        """A phase over `seqs`, or None when its assumptions fail: every sequence decodes (one token not
        yet computed) and its free slots are within one block (as the scheduler and the runs leave them)."""
        seqs, size = tuple(seqs), blocks.block_size
        cached: list[int] = []
        held: list[int] = []
        free_slots: list[int] = []
        lefts: list[int] = []
        for seq in seqs:  # one pass (a phase starts at nearly every arrival sent to the engine)
            computed, holds = seq.num_cached_tokens, len(seq.block_table)
            slots = holds * size - computed
            if seq.num_tokens != computed + 1 or slots < 0 or slots > size:
                return None
            cached.append(computed)
            held.append(holds)
            free_slots.append(slots)
            lefts.append(left[seq.seq_id])
        if not seqs:
            return None
        return cls(seqs, cached, held, free_slots, lefts, blocks)

    def _cumulate(self, free_slots: list[int]) -> None:
        """How many free-slot counts are ≤ each R < block_size (kept as sequences join and leave)."""
        ordered = sorted(free_slots)
        self._upto = [bisect.bisect_right(ordered, r) for r in range(self.size)]

    def _taken(self, steps: int) -> int:
        """Blocks taken beyond the sequences' own at the phase start, by `steps` steps into it."""
        if steps <= 0:
            return 0
        q, r = divmod(steps - 1, self.size)
        return self.n * q + self._upto[r]

    @property
    def context(self) -> int:
        return self.tokens + self.n * self.steps

    @property
    def min_left(self) -> int:
        return self._ends[0][0] - self.steps

    def next_blocks(self) -> int:
        """Sequences whose next token needs a new block (the scheduler's may_append takes one each)."""
        return self._taken(self.steps + 1) - self._taken(self.steps)

    def extra(self, steps: int) -> int:
        """Blocks `steps` more steps take beyond those the next token's took (the runs' _extra_blocks)."""
        return self._taken(self.steps + steps) - self._taken(self.steps + 1)

    def run(self, model: EngineModel, clock: float, until: float) -> tuple[float, list[Sequence]]:
        """One decode run from `clock` (the next token's blocks already taken): the new clock and the
        sequences that finish at its end, in batch order, written back (their blocks still held)."""
        num, context = self.n, self.context
        steps = self.min_left
        step_s = model.decode_time(num, context)
        if until != float("inf"):
            steps = max(1, min(steps, int((until - clock) / step_s) + 1))
        steps = self._fit(steps)
        clock += model.decode_run_time(num, context, steps)
        self.blocks.take(self.extra(steps))
        return clock, self._step_to(self.steps + steps)

    def step(self) -> list[Sequence]:
        """One step of every sequence (the decodes of a mixed step; the next token's blocks already taken):
        those that finish at it, in batch order, written back (their blocks still held)."""
        return self._step_to(self.steps + 1)

    def _step_to(self, steps: int) -> list[Sequence]:
        self.steps = steps
        ends = self._ends
        done = []
        while ends and ends[0][0] <= steps:  # all end at this step: popped in batch order (ties by place)
            done.append(heapq.heappop(ends)[1])
        for i in done:
            self._write(i)
            self.n -= 1
            self.tokens -= self.cached[i] + 1
            upto = self._upto
            for r in range(self.free_slots[i], self.size):  # it no longer counts at any R ≥ its free slots
                upto[r] -= 1
        return [self.seqs[i] for i in done]

    def add(self, seq: Sequence, left: int) -> bool:
        """`seq` joins the phase now, at its end of the batch (a prompt just prefilled, its first token
        sampled), as a sequence that began the phase `steps` tokens earlier would be: its crossings into
        new blocks from now on fall on the same steps. False (nothing changed) when it is not decoding or
        its blocks hold a whole free block (the closed form then needs its own start)."""
        size, computed, holds = self.size, seq.num_cached_tokens, len(seq.block_table)
        slots = holds * size - computed
        if seq.num_tokens != computed + 1 or not 0 <= slots < size:
            return False
        steps, i = self.steps, len(self.seqs)
        self.seqs.append(seq)
        self.cached.append(computed - steps)
        self.held.append(holds)
        virtual = (slots + steps) % size  # the free slots it would have had at the phase start
        self.free_slots.append(virtual)
        self.left.append(left + steps)
        heapq.heappush(self._ends, (left + steps, i))
        upto = self._upto
        for r in range(virtual, size):
            upto[r] += 1
        self.n += 1
        self.tokens += computed - steps + 1
        return True

    def _fit(self, steps: int) -> int:
        """_fit_blocks by the closed form: the most steps (≤ `steps`) whose blocks are free."""
        free = self.blocks.num_free_blocks
        if steps <= 1 or self.n * (steps // self.size + 1) <= free or self.extra(steps) <= free:
            return steps
        low, high = 1, steps
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self.extra(mid) <= free else (low, mid - 1)
        return low

    def _write(self, i: int) -> None:
        seq, size = self.seqs[i], self.size
        computed = self.cached[i] + self.steps
        seq.num_cached_tokens = computed
        seq.num_tokens = computed + 1
        self.blocks.hold(seq, max(self.held[i], (computed + size - 1) // size))

    def write_back(self, left: dict[int, int]) -> None:
        """Every sequence still running as the per-sequence runs would have left it (the phase ends).
        (_write, inline: once per running sequence per arrival.)"""
        steps, size, seqs, cached, held, lefts = self.steps, self.size, self.seqs, self.cached, self.held, self.left
        for _, i in self._ends:
            seq = seqs[i]
            computed = cached[i] + steps
            seq.num_cached_tokens = computed
            seq.num_tokens = computed + 1
            if (computed + size - 1) // size > held[i]:
                self.blocks.hold(seq, (computed + size - 1) // size)
            left[seq.seq_id] = lefts[i] - steps
