"""In-flight batching: which sequences compute which tokens in the next step (pure Python, no torch).

As vLLM v1 schedules: one token budget per step; running decodes come first (one token each),
then chunks of partly prefilled and waiting prompts take what budget is left, so a long prompt
arriving stalls the running streams for one bounded chunk per step, not for its whole prefill.
While decodes run, a prompt token at context c costs 1 + c/K of the budget (K: context_cost_tokens),
since a chunk's attention reads its whole context: chunks late in a long prompt get smaller; several new
prompts waiting at once get a larger budget for their first chunks (burst_batched_tokens).
New requests join at the next step; finished ones leave at once; when blocks run out the newest
sequence is preempted (blocks freed, recomputed later) — never a failure. A request whose first KV block is being prefilled for another waits
one step and then reuses the cached blocks (SGLang's in-batch prefix caching).
"""
from __future__ import annotations

import bisect
import math

from local_engine.batch import ScheduledBatch
from local_engine.block_manager import BlockKey, BlockManager
from local_engine.config import EngineConfig
from local_engine.sequence import FinishReason, Sequence, SequenceStatus


class Scheduler:
    """Owns the waiting and running lists; both stay sorted by (priority, arrival)."""

    def __init__(self, config: EngineConfig, block_manager: BlockManager, device_type: str = "cpu") -> None:
        self.config = config
        self.token_budget = config.token_budget(device_type)
        self.prefill_floor = config.prefill_floor(device_type)
        self.burst_tokens = config.burst_batched_tokens if self.prefill_floor else 0
        self.context_cost = config.context_cost_tokens
        self.block_manager = block_manager
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self._by_id: dict[int, Sequence] = {}
        self.num_preemptions = 0
        self._watermark_blocks = int(config.admission_watermark * block_manager.num_total_blocks)

    @property
    def num_unfinished(self) -> int:
        return len(self._by_id)

    def has_work(self) -> bool:
        return bool(self._by_id)

    def _key(self, seq: Sequence) -> tuple[int, int]:
        # seq_id grows with creation, so it orders arrivals; a preempted sequence keeps its place.
        return (seq.priority if self.config.enable_priority else 0, seq.seq_id)

    def add(self, seq: Sequence) -> None:
        if seq.seq_id in self._by_id:
            raise ValueError(f"sequence {seq.seq_id} already added")
        seq.status = SequenceStatus.WAITING
        self._by_id[seq.seq_id] = seq
        bisect.insort(self.waiting, seq, key=self._key)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Take a sequence out (finished or aborted) and free its blocks now."""
        if self._by_id.pop(seq.seq_id, None) is None:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.block_manager.deallocate(seq)
        else:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    def get(self, seq_id: int) -> Sequence | None:
        return self._by_id.get(seq_id)

    def schedule(self) -> ScheduledBatch | None:
        """The next step's work: running decodes first, then prefill chunks with the budget left."""
        step = _Step(self.token_budget)
        self._schedule_decodes(step)
        if not step.decodes:  # nobody is waiting for a token: a burst of new prompts starts at once
            step.budget = max(step.budget, self.config.max_idle_batched_tokens)
        else:  # many running decodes do not crowd the prompts out (default budget only)
            step.budget = max(step.budget, self.prefill_floor)
        self._schedule_prefills(step)
        if not step.decodes and not step.prefills:
            return None
        entries = step.decodes + step.prefills
        return ScheduledBatch(tuple(s for s, _ in entries), tuple(n for _, n in entries),
                              num_decodes=len(step.decodes), preempted_seq_ids=tuple(step.preempted))

    def _schedule_decodes(self, step: _Step) -> None:
        """One token for each running sequence past its prefill, in order, while budget lasts."""
        i = 0
        while i < len(self.running) and step.budget > 0:
            seq = self.running[i]
            if seq.num_tokens - seq.num_cached_tokens > 1:  # mid-prefill: the chunk pass takes it
                i += 1
                continue
            while not self.block_manager.can_append(seq):
                victim = self.running[-1]  # the newest (or lowest-priority) one gives way
                self._preempt(victim, step)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break  # it preempted itself: everything after it is gone too
            self.block_manager.may_append(seq)
            step.add(seq, 1, decode=True)
            i += 1

    def _schedule_prefills(self, step: _Step) -> None:
        """Chunks of partly prefilled sequences, then of waiting ones, under what budget is left."""
        for seq in self.running:  # continue chunked prefills first
            remaining = seq.num_tokens - seq.num_cached_tokens
            if remaining > 1 and step.budget > 0:
                self._add_chunk(seq, step)
        if step.decodes and len(self.waiting) > 1 and self.burst_tokens:  # a burst of new prompts
            taken = sum(n for _, n in step.prefills)
            burst = min(self.burst_tokens, self.prefill_floor * len(self.waiting))
            step.budget = max(step.budget, burst - taken)
        computing: set[BlockKey] = set()  # first blocks this step computes and caches
        bm = self.block_manager
        while self.waiting and step.budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            key = bm.first_block_key(seq)
            if key is not None and key in computing:
                break  # its prefix is being computed now: next step it is a cache hit, not a recompute
            if not self._make_room(seq, step):
                break  # strict order: a later, smaller request does not jump the queue
            del self.waiting[0]
            bm.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=self._key)
            n = self._add_chunk(seq, step)
            if key is not None and seq.num_cached_tokens == 0 and n >= bm.block_size:
                computing.add(key)

    def _add_chunk(self, seq: Sequence, step: _Step) -> int:
        """The next chunk of a prompt: as many tokens as the budget left pays for (at least one)."""
        per_token = 1.0
        if step.decodes and self.context_cost:  # nobody waits on an idle step: tokens only
            per_token += seq.num_cached_tokens / self.context_cost
        n = min(seq.num_tokens - seq.num_cached_tokens, max(1, int(step.budget / per_token)))
        step.add(seq, n, decode=False, cost=math.ceil(n * per_token))
        return n

    def _make_room(self, seq: Sequence, step: _Step) -> bool:
        """Whether the sequence can be admitted now; with priority on, preempts lower-priority ones."""
        while not self._can_admit(seq):
            victim = self.running[-1] if self.running else None
            if (
                victim is None
                or not self.config.enable_priority
                or self._key(victim)[0] <= self._key(seq)[0]
            ):
                return False
            self._preempt(victim, step)  # also takes it out of this step, if it was in
        return True

    def _can_admit(self, seq: Sequence) -> bool:
        bm = self.block_manager
        need = bm.num_free_blocks_needed(seq)  # a prefix that running sequences hold takes no free blocks
        if need > bm.num_free_blocks:
            return False
        if not self.running:  # alone it always fits (requests that never fit are refused earlier)
            return True
        # Keep a few blocks for running decodes, so admitting does not preempt at the next step.
        return bm.num_free_blocks - need >= self._watermark_blocks

    def _preempt(self, seq: Sequence, step: _Step) -> None:
        step.remove(seq)
        self.running.remove(seq)
        self.block_manager.deallocate(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        bisect.insort(self.waiting, seq, key=self._key)
        step.preempted.append(seq.seq_id)


class _Step:
    """The step being built: its decode and prefill entries, the budget left, who was preempted."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.decodes: list[tuple[Sequence, int]] = []
        self.prefills: list[tuple[Sequence, int]] = []
        self.preempted: list[int] = []
        self._costs: dict[int, int] = {}  # seq_id -> budget taken, when not its token count

    def add(self, seq: Sequence, n: int, *, decode: bool, cost: int | None = None) -> None:
        (self.decodes if decode else self.prefills).append((seq, n))
        if cost is not None and cost != n:
            self._costs[seq.seq_id] = cost
        self.budget -= n if cost is None else cost

    def remove(self, seq: Sequence) -> None:
        """Drop a sequence preempted after it was scheduled; its tokens go back to the budget."""
        for entries in (self.decodes, self.prefills):
            for i, (s, n) in enumerate(entries):
                if s is seq:
                    del entries[i]
                    self.budget += self._costs.pop(seq.seq_id, n)
                    return
