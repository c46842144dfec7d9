"""The engine scheduler's step, with its decode pass done in bulk where nothing in it can differ from
the engine's own per-sequence loop: every running sequence past its prefill fits the token budget and
the free blocks cover each one that crosses into a new block (no preemption). The prefill pass is
the engine's own. Counting block manager only; checked bit for bit against `Scheduler.schedule` with
the engine's BlockManager (tests/unit/policies/replay/test_block_count.py)."""
from __future__ import annotations

import bisect

from local_engine.batch import ScheduledBatch
from local_engine.scheduler import Scheduler, _Step
from local_engine.sequence import SequenceStatus
from policies.replay.block_count import CountingBlockManager


def schedule(scheduler: Scheduler, blocks: CountingBlockManager) -> ScheduledBatch | None:
    """What `scheduler.schedule()` returns, computed without its per-sequence decode loop when it can be."""
    budget, size = scheduler.token_budget, blocks.block_size
    decoding = [seq for seq in scheduler.running if seq.num_tokens - seq.num_cached_tokens <= 1]
    if not decoding or len(decoding) > budget:
        return scheduler.schedule()  # none decoding (the idle budget applies), or the budget cuts in
    short = [seq for seq in decoding if seq.num_tokens > len(seq.block_table) * size]
    if len(short) > blocks.num_free_blocks:
        return scheduler.schedule()  # someone is preempted: the engine's loop decides who
    for seq in short:
        blocks.may_append(seq)
    step = _Step(budget)
    priority = scheduler.config.enable_priority
    if priority or (scheduler.burst_tokens and len(scheduler.waiting) > 1):
        # Its prefill pass may preempt a decode, looked for (and dropped) in step.decodes; its burst budget
        # applies only where step.decodes holds the decodes.
        step.decodes = [(seq, 1) for seq in decoding]
    step.budget = max(budget - len(decoding), scheduler.prefill_floor)  # as schedule() after its decode pass
    scheduler._schedule_prefills(step)  # noqa: SLF001 - the engine's own prefill pass
    if priority:
        entries = step.decodes + step.prefills
        seqs, counts = zip(*entries) if entries else ((), ())
        return ScheduledBatch(seqs, counts, num_decodes=len(step.decodes), preempted_seq_ids=tuple(step.preempted))
    # No preemption without priority: the decodes are `decoding`, one token each (~50 sequences a step).
    seqs, counts = tuple(decoding), (1,) * len(decoding)
    if step.prefills:
        more, chunks = zip(*step.prefills)
        seqs, counts = seqs + more, counts + chunks
    return ScheduledBatch(seqs, counts, num_decodes=len(decoding), preempted_seq_ids=tuple(step.preempted))


def admit_waiting(scheduler: Scheduler, blocks: CountingBlockManager, step: _Step) -> None:
    """The engine's prefill pass (`Scheduler._schedule_prefills`) when every running sequence decodes (none
    has a chunk left, so its first loop does nothing: skipped) and, without priority or prefix caching,
    admitting is `_can_admit` (no preemption, no first block being computed). Checked against the engine's
    own by the same test."""
    waiting, running, limit = scheduler.waiting, scheduler.running, scheduler.config.max_num_seqs
    while waiting and step.budget > 0 and len(running) < limit:
        seq = waiting[0]
        if not scheduler._can_admit(seq):  # noqa: SLF001 - the engine's own admission test
            break  # strict order: a later, smaller request does not jump the queue
        del waiting[0]
        blocks.allocate(seq)
        seq.status = SequenceStatus.RUNNING
        bisect.insort(running, seq, key=scheduler._key)  # noqa: SLF001
        scheduler._add_chunk(seq, step)  # noqa: SLF001


def burst_budget(scheduler: Scheduler, step: _Step) -> None:
    """The engine's burst budget (`Scheduler._schedule_prefills`) for a step whose decodes are not in
    `step.decodes` and that continues no chunk: two or more new prompts waiting beside running decodes
    may take up to `burst_tokens`, the floor's per waiting prompt."""
    if scheduler.burst_tokens and len(scheduler.waiting) > 1:
        burst = min(scheduler.burst_tokens, scheduler.prefill_floor * len(scheduler.waiting))
        step.budget = max(step.budget, burst)
