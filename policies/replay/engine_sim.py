"""One simulated engine replica: the engine's own pure scheduler and block manager, stepped on a
simulated clock whose step times come from the performance model (no torch, no model)."""
from __future__ import annotations

from local_engine.admission import EngineLimits
from local_engine.batch import ScheduledBatch
from local_engine.block_manager import BlockManager
from local_engine.config import EngineConfig
from local_engine.errors import RequestTooLarge
from local_engine.scheduler import Scheduler, _Step
from local_engine.sequence import Sequence
from policies.live import EngineSnapshot
from policies.perf_model import EngineModel
from policies.replay.block_count import CountingBlockManager, SimSequence
from policies.replay.decode_phase import DecodePhase
from policies.replay.decode_runs import DecodeRuns, EngineEvent
from policies.replay.fast_schedule import admit_waiting, burst_budget, schedule
from policies.replay.step_rates import StepRates

_PAD = 0  # generated and unique-suffix tokens: only their count and their prefix matter


class SimEngine(DecodeRuns):
    """Steps whenever it has work; `advance(t)` runs every step that starts by `t`."""

    def __init__(self, model: EngineModel, prefix_caching: bool) -> None:
        self.model = model
        config = EngineConfig(block_size=model.block_size, max_num_seqs=model.max_num_seqs,
                              max_num_batched_tokens=max(model.max_num_batched_tokens, model.max_num_seqs),
                              max_model_len=model.max_model_len, max_waiting=model.max_waiting,
                              enable_prefix_caching=prefix_caching)
        self.blocks = (BlockManager(model.num_blocks, model.block_size, True) if prefix_caching
                       else CountingBlockManager(model.num_blocks, model.block_size))
        self.scheduler = Scheduler(config, self.blocks)
        self.scheduler.prefill_floor = model.prefill_floor_tokens  # as the engine's default budget keeps
        # ... and its burst budget, which the engine keeps only with a floor (the budget above has none)
        self.scheduler.burst_tokens = model.burst_batched_tokens if model.prefill_floor_tokens else 0
        self.limits = EngineLimits(model.max_model_len, model.block_size, model.num_blocks, model.max_num_seqs,
                                   model.max_waiting)
        self.clock = 0.0
        self.busy_s = 0.0
        self._request: dict[int, int] = {}  # seq_id → request index
        self._left: dict[int, int] = {}  # seq_id → tokens it has still to generate
        # The rates its state reports, measured as the engine does (tokens per busy second over its
        # stats window; 0 when no step ran in it), not a nominal rate: the router works off on them.
        self.throughput = StepRates(config.stats_window_s)
        self._decoding = False  # every running sequence is past its prefill: the next step decodes them all
        # Sequences whose last prompt token is left for a decode step (a chunk stopped one short): the
        # scheduler decodes them, and that step samples their first token.
        self._unsampled: set[int] = set()
        self._phase: DecodePhase | None = None  # decode runs by counts, until the scheduler runs again
        # The queue as the engine reports it while a step runs: what waited when the step began (its state is
        # published between steps, before the step's scheduler takes prompts) and the requests added since.
        self._step_queue = 0
        # ... and its running sequences and free blocks: as a step began (the end of the last one-step path:
        # a prefill or mixed step) and the sequences that finished at the clock (see DecodeRuns._finish).
        self._shown = (-1.0, 0, 0)  # (that step's end, running, free blocks when it began)
        self._gone = (-1.0, 0, 0)  # (the clock, sequences finished at it, blocks they gave back)

    def refusal(self, prompt_tokens: int, max_tokens: int, now: float) -> str:
        """Why the engine would refuse this request at `now` ("" when it takes it): too large, or full by the
        queue its state reports (AsyncLLMEngine.submit refuses on its snapshot's num_waiting)."""
        try:
            self.limits.check_fits(prompt_tokens, max_tokens)
        except RequestTooLarge:
            return "too_large"
        return "full" if self.reported_waiting(now) >= self.model.max_waiting else ""

    @property
    def caches_prefixes(self) -> bool:
        return self.blocks.enable_prefix_caching

    def submit(self, request: int, prompt: list[int] | int, output_tokens: int, now: float) -> None:
        """`prompt`: its token ids, or only their number when the engine does not cache prefixes."""
        if not self.scheduler.has_work():
            self.clock = max(self.clock, now)  # idle until now
        keep = self.caches_prefixes
        if isinstance(prompt, int):
            if keep:
                raise ValueError("an engine with prefix caching needs the prompt's token ids")
            ids, num = [], prompt
        else:
            ids, num = (prompt if keep else []), len(prompt)
        seq = SimSequence(ids, num, output_tokens, now, keep)
        self._decoding = False
        self._request[seq.seq_id] = request
        self._left[seq.seq_id] = max(1, output_tokens)
        self.scheduler.add(seq)
        self._step_queue += 1

    def reported_waiting(self, now: float) -> int:
        """The queue the engine's state says at `now` (stepped to it): while a step runs, what waited when it
        began and the requests added since (the engine publishes its state between steps, and counts a request
        added but not yet in its step loop as waiting), not what its scheduler left waiting."""
        waiting = len(self.scheduler.waiting)
        return max(waiting, self._step_queue) if now < self.clock else waiting

    def reported_running(self, now: float) -> tuple[int, int]:
        """The running sequences and free blocks the engine's state says at `now` (stepped to it): while a step
        runs, those it began with (its prompts not yet running nor holding blocks, its finishes still running
        and holding theirs). A decode run's last step: the finishes put back, its own new blocks not (<= 1 a
        sequence, a sixteenth of them on average)."""
        running, free = len(self.scheduler.running), self.blocks.num_free_blocks
        if now >= self.clock:
            return running, free
        if self._shown[0] == self.clock:
            return self._shown[1], self._shown[2]
        gone = self._gone
        return (running + gone[1], free - gone[2]) if gone[0] == self.clock else (running, free)

    def snapshot(self, now: float) -> EngineSnapshot:
        m = self.model
        rates = self.throughput.rates(now)
        running, free = self.reported_running(now)
        return EngineSnapshot(
            taken_at=now, kv_bytes_per_token=m.kv_bytes_per_token, block_size=m.block_size,
            num_blocks_total=m.num_blocks, num_blocks_free=free, num_running=running,
            num_waiting=self.reported_waiting(now), prefix_cache_hit_rate=self.blocks.prefix_cache_hit_rate,
            prefill_tokens_per_s=rates.prefill_tokens_per_s, decode_tokens_per_s=rates.decode_tokens_per_s,
            max_model_len=m.max_model_len, max_num_seqs=m.max_num_seqs, max_waiting=m.max_waiting)

    def advance(self, until: float, events: list[EngineEvent]) -> None:
        """Run every step that starts at or before `until`, appending first-token and finish events."""
        while self.clock <= until and self.scheduler.has_work():
            start, self._step_queue = self.clock, len(self.scheduler.waiting)
            began = (len(self.scheduler.running), self.blocks.num_free_blocks)
            if self._decoding and not self.scheduler.waiting:
                # What schedule() would return is a decode of every running sequence: skip asking it.
                self._keep_decoding(until, events)
                self.busy_s += self.clock - start
                if self.clock != start or not self.scheduler.has_work():
                    continue
            if self._phase is not None:
                if self._phased_mixed(self._phase, events):  # prompts join the phase: the scheduler not asked
                    self._shown = (self.clock, *began)
                    self.busy_s += self.clock - start
                    continue
                self._phase.write_back(self._left)  # the scheduler reads every sequence: write them back first
                self._phase = None
            batch = (schedule(self.scheduler, self.blocks) if isinstance(self.blocks, CountingBlockManager)
                     else self.scheduler.schedule())
            if batch is None:
                return
            self._decoding = False
            if batch.is_prefill:
                context = sum(seq.num_cached_tokens for seq in batch.seqs)
                step_s = self.model.prefill_time(batch.total_tokens, context)
                self.clock += step_s
                self.throughput.record(self.clock, True, batch.total_tokens, step_s)
                self._after_prefill(batch.seqs, batch.num_scheduled_tokens, events)
            elif not batch.is_decode:
                self._mixed_step(batch, events)
            if not batch.is_decode:  # every prompt prefilled (none mid-chunk): the next schedule decodes them all
                self._shown = (self.clock, *began)
                self._decoding = not [seq for seq in self.scheduler.running if seq.num_tokens - seq.num_cached_tokens != 1]
            else:
                self._decoding = len(batch.seqs) == len(self.scheduler.running)
                # A preemption this step may let a waiting sequence in at the next: step once.
                self._decode_run(batch.seqs, self.clock if batch.preempted_seq_ids else until, events)
                self._keep_decoding(until, events)
            self.busy_s += self.clock - start

    def _mixed_step(self, batch: ScheduledBatch, events: list[EngineEvent]) -> None:
        """One step of the engine's mixed schedule: every running sequence decodes one token, then a
        chunk of waiting prompts is prefilled, in one forward pass (EngineModel.mixed_time)."""
        d = batch.num_decodes  # batch.parts(), by slices: the decodes lead
        decodes, prefills, counts = batch.seqs[:d], batch.seqs[d:], batch.num_scheduled_tokens[d:]
        context = sum([seq.num_tokens for seq in decodes])  # (lists: faster than generators here)
        prefix = sum([seq.num_cached_tokens for seq in prefills])
        self._mixed_clock(d, context, sum(counts), prefix)
        if self._unsampled:
            self._first_tokens(decodes, self.clock, events)
        left, caching = self._left, self.blocks.enable_prefix_caching
        for seq in decodes:  # the scheduler already gave each its next slot
            seq.num_cached_tokens += 1
            if caching:
                seq.append_token(_PAD)
                self.blocks.cache_full_blocks(seq)
            else:  # SimSequence.append_token without the call (ids are kept only for the prefix cache)
                seq.num_tokens += 1
            remaining = left[seq.seq_id] - 1  # _maybe_finish, inline: once per running sequence per step
            if remaining > 0:
                left[seq.seq_id] = remaining
            else:
                self._finish(seq, events)
        self._after_prefill(prefills, counts, events)

    def _mixed_clock(self, decodes: int, context: int, prefill_tokens: int, prefix: int) -> None:
        """One mixed step on the clock: `decodes` sequences holding `context` tokens decode one token each
        while `prefill_tokens` prompt tokens (after `prefix` cached ones) are prefilled, in one forward pass
        (EngineModel.mixed_time); its time split between the two rates by tokens, as the engine's _record does."""
        step_s = self.model.mixed_time(decodes, context, prefill_tokens, prefix)
        self.clock += step_s
        total = decodes + prefill_tokens
        self.throughput.record(self.clock, False, decodes, step_s * decodes / total)
        self.throughput.record(self.clock, True, prefill_tokens, step_s * prefill_tokens / total)

    def _phased_mixed(self, phase: DecodePhase, events: list[EngineEvent]) -> bool:
        """fast_schedule's mixed step while a decode phase runs, the phase kept: its sequences decode one
        step (their blocks by count), the engine's own prefill pass admits the waiting prompts, and those
        that sampled their first token join the phase. False (nothing changed) where the scheduler must
        decide: no prompt waits or is admitted, none decodes, a preemption, priorities, a chunk left unsampled."""
        s, bm = self.scheduler, self.blocks
        budget = s.token_budget
        if not s.waiting or self._unsampled or s.config.enable_priority or not 0 < phase.n == len(s.running) \
                or phase.n > budget:
            return False  # (none running: the scheduler's idle budget and a prefill-only step)
        need = phase.next_blocks()  # the decodes' may_append, as fast_schedule takes them: before the prefills
        if need > bm.num_free_blocks:
            return False
        bm.take(need)
        step = _Step(budget)
        step.budget = max(budget - phase.n, s.prefill_floor)  # as schedule() after its decode pass
        burst_budget(s, step)  # (none running has a chunk left: what its prefill pass adds first)
        admit_waiting(s, bm, step)  # the engine's prefill pass, every running sequence a phase decode
        if not step.prefills:
            bm.take(-need)  # nothing admitted (it changed nothing): a decode step, the scheduler's call
            return False
        prefills, counts = zip(*step.prefills)
        self._mixed_clock(phase.n, phase.context, sum(counts), sum([q.num_cached_tokens for q in prefills]))
        for seq in phase.step():
            self._finish(seq, events)
        self._after_prefill(prefills, counts, events)
        left, unsampled = self._left, self._unsampled
        for seq in prefills:  # in batch order, as they stand in the running list (the newest last)
            if seq.seq_id in left and (seq.seq_id in unsampled or not phase.add(seq, left[seq.seq_id])):
                break  # mid-prompt or left unsampled: the next step is the scheduler's
        self._decoding = phase.n == len(s.running)
        return True

    def _after_prefill(self, seqs: tuple[Sequence, ...], counts: tuple[int, ...], events: list[EngineEvent]) -> None:
        for seq, n in zip(seqs, counts):
            samples = seq.num_cached_tokens + n == seq.num_tokens
            seq.num_cached_tokens += n
            self.blocks.cache_full_blocks(seq)
            if not samples:
                if seq.num_cached_tokens + 1 == seq.num_tokens and seq.num_completion_tokens == 0:
                    self._unsampled.add(seq.seq_id)
                continue
            seq.append_token(_PAD)
            if seq.num_completion_tokens == 1:  # (after a preemption it may have been left unsampled)
                self._unsampled.discard(seq.seq_id)
                events.append(EngineEvent(self.clock, self._request[seq.seq_id], True))
            self._maybe_finish(seq, events)
