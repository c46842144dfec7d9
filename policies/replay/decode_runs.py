"""The simulated engine's decode runs: while nothing waits, every running sequence decodes each step, so
runs of identical steps go on without asking the scheduler (by counts in a DecodePhase where its
assumptions hold), until something waits, a sequence finishes, blocks run short or the caller's time."""
from __future__ import annotations

from dataclasses import dataclass

from local_engine.block_manager import BlockManager
from local_engine.scheduler import Scheduler
from local_engine.sequence import FinishReason, Sequence
from policies.perf_model import EngineModel
from policies.replay.block_count import CountingBlockManager, SimSequence
from policies.replay.decode_phase import DecodePhase
from policies.replay.step_rates import StepRates

_PAD = 0  # generated tokens: only their count matters


@dataclass(frozen=True, slots=True)
class EngineEvent:
    time: float
    request: int  # the replay's request index
    first_token: bool  # True: its first token; False: it finished


class DecodeRuns:
    """The decode-run half of SimEngine (policies/replay/engine_sim.py), which owns this state."""

    model: EngineModel
    scheduler: Scheduler
    blocks: CountingBlockManager | BlockManager
    clock: float
    throughput: StepRates
    _request: dict[int, int]  # seq_id → request index
    _left: dict[int, int]  # seq_id → tokens it has still to generate
    _unsampled: set[int]
    _phase: DecodePhase | None
    _gone: tuple[float, int, int]

    def _keep_decoding(self, until: float, events: list[EngineEvent]) -> None:
        """With nothing waiting, the scheduler's next step is a decode of every running sequence:
        go on without asking it, across finishes, until something waits, the free blocks cannot give
        each sequence its next slot (a preemption: the scheduler's call), or `until`."""
        running, bm = self.scheduler.running, self.blocks
        if self._phase is None and isinstance(bm, CountingBlockManager) and not self._unsampled \
                and 0 < len(running) <= self.model.max_num_seqs:
            self._phase = DecodePhase.start(running, self._left, bm)  # by counts, when its assumptions hold
        if self._phase is not None:
            self._phased(self._phase, until, events)
            return
        while running and not self.scheduler.waiting and self.clock <= until:
            seqs = tuple(running[:self.model.max_num_seqs])
            capacity = bm.block_size
            short = [seq for seq in seqs if seq.num_tokens > len(seq.block_table) * capacity]
            if len(short) > bm.num_free_blocks:
                return
            for seq in short:  # may_append takes a block exactly for these, and does nothing for the rest
                bm.may_append(seq)
            self._decode_run(seqs, until, events)

    def _phased(self, phase: DecodePhase, until: float, events: list[EngineEvent]) -> None:
        """_keep_decoding by counts: the same runs, clock, blocks and events, sequences written only at their end."""
        bm, running = self.blocks, self.scheduler.running
        while running and not self.scheduler.waiting and self.clock <= until:
            need = phase.next_blocks()
            if need > bm.num_free_blocks:
                return  # a preemption: the scheduler's call (advance writes the sequences back first)
            bm.take(need)
            start, num, steps = self.clock, phase.n, phase.steps
            self.clock, done = phase.run(self.model, self.clock, until)
            self.throughput.record_run(self.clock, num, phase.steps - steps, self.clock - start)
            for seq in done:
                self._finish(seq, events)
        if not running:
            self._phase = None

    def _decode_run(self, seqs: tuple[Sequence, ...], until: float, events: list[EngineEvent]) -> None:
        """The scheduled decode step, and as many identical ones after it as nothing can change:
        no sequence finishes before the last, the free blocks cover every block they cross into,
        and no step starts after `until` (a new arrival may change the next schedule)."""
        left = self._left
        num = len(seqs)
        context = sum([seq.num_tokens for seq in seqs])  # (lists: faster than generators at ~50 sequences)
        steps = min([left[seq.seq_id] for seq in seqs])
        step_s = self.model.decode_time(num, context)
        if until != float("inf"):
            steps = max(1, min(steps, int((until - self.clock) / step_s) + 1))
        steps = self._fit_blocks(seqs, steps)
        if self._unsampled:
            self._first_tokens(seqs, self.clock + step_s, events)
        run_s = self.model.decode_run_time(num, context, steps)
        self.clock += run_s
        self.throughput.record_run(self.clock, num, steps, run_s)
        bm = self.blocks
        caching, size = bm.enable_prefix_caching, bm.block_size
        counting = isinstance(bm, CountingBlockManager)  # (the tests also run the engine's own one)
        if steps == 1 and not caching:  # the common case, its loop alone: every token already has its slot
            for seq in seqs:
                seq.num_cached_tokens += 1
                seq.num_tokens += 1
                sid = seq.seq_id
                remaining = left[sid] - 1
                if remaining > 0:
                    left[sid] = remaining
                else:
                    self._finish(seq, events)
            return
        for seq in seqs:
            if steps == 1:  # the scheduler already gave its token a slot
                seq.num_cached_tokens += 1
                seq.num_tokens += 1
                if caching:
                    seq.token_ids.append(_PAD)
                    bm.cache_full_blocks(seq)
            elif not counting:
                self._grow(seq, steps)
            else:  # _grow by counts, inline: `steps` tokens computed, blocks up to them, one more sampled
                target = seq.num_cached_tokens + steps
                if (target + size - 1) // size > len(seq.block_table):
                    bm.grow_to(seq, target)
                seq.num_cached_tokens = target
                seq.num_tokens = target + 1
            remaining = left[seq.seq_id] - steps
            if remaining > 0:
                left[seq.seq_id] = remaining
            else:
                self._finish(seq, events)

    def _first_tokens(self, seqs: tuple[Sequence, ...], when: float, events: list[EngineEvent]) -> None:
        """First-token events of those in a decode step that computes their last prompt token."""
        for seq in seqs:
            if seq.seq_id in self._unsampled:
                self._unsampled.discard(seq.seq_id)
                events.append(EngineEvent(when, self._request[seq.seq_id], True))

    def _extra_blocks(self, seqs: tuple[Sequence, ...], steps: int) -> int:
        bm = self.blocks
        return sum(max(0, bm.num_blocks_for(s.num_cached_tokens + steps) - len(s.block_table)) for s in seqs)

    def _fit_blocks(self, seqs: tuple[Sequence, ...], steps: int) -> int:
        free = self.blocks.num_free_blocks
        # No sequence crosses more than steps // block_size + 1 block boundaries: often enough to know.
        if steps <= 1 or len(seqs) * (steps // self.blocks.block_size + 1) <= free \
                or self._extra_blocks(seqs, steps) <= free:
            return steps
        low, high = 1, steps  # the first step's blocks are already in place (the scheduler did it)
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if self._extra_blocks(seqs, mid) <= free else (low, mid - 1)
        return low

    def _grow(self, seq: SimSequence, steps: int) -> None:
        """Compute `steps` decode tokens of `seq`: take the blocks they cross into, append the samples."""
        bm = self.blocks
        target = seq.num_cached_tokens + steps  # positions that will hold K/V
        seq.add_tokens(target - seq.num_tokens, _PAD)
        if isinstance(bm, CountingBlockManager):
            bm.grow_to(seq, target)
        else:
            table, size = seq.block_table, bm.block_size
            while len(table) * size < target:  # may_append adds one block while the last token lies past them
                bm.may_append(seq)
        seq.num_cached_tokens = target
        seq.append_token(_PAD)  # the token sampled by the last step
        if seq.keep_ids:
            bm.cache_full_blocks(seq)

    def _maybe_finish(self, seq: Sequence, events: list[EngineEvent]) -> None:
        """After a prefill step that sampled a token: done when that was its last."""
        remaining = self._left[seq.seq_id] - 1
        if remaining > 0:
            self._left[seq.seq_id] = remaining
        else:
            self._finish(seq, events)

    def _finish(self, seq: Sequence, events: list[EngineEvent]) -> None:
        """Done at the clock; counted in `_gone` (the state a poll during its last step sees still holds it)."""
        free = self.blocks.num_free_blocks
        self.scheduler.finish(seq, FinishReason.LENGTH)
        clock, num, blocks = self._gone
        if clock != self.clock:
            num = blocks = 0
        self._gone = (self.clock, num + 1, blocks + self.blocks.num_free_blocks - free)
        events.append(EngineEvent(self.clock, self._request.pop(seq.seq_id), False))
        del self._left[seq.seq_id]
