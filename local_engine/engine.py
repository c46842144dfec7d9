"""LLMEngine: one step is schedule → run → postprocess; plus admission checks and abort.

Single-threaded: the async wrapper drives it from one background thread. The model runner
never mutates a sequence; this loop advances the cache counts, appends tokens and stops.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from local_engine.admission import EngineLimits
from local_engine.batch import ScheduledBatch
from local_engine.block_manager import BlockManager
from local_engine.config import EngineConfig
from local_engine.queue_wait import QueueSteps, QueueWait
from local_engine.scheduler import Scheduler
from local_engine.sequence import FinishReason, Sequence
from local_engine.stats import StepTotals, ThroughputWindow
from local_engine.step_output import StepOutput
from local_engine.stop_strings import StopStringFilter


class RunnerLike(Protocol):
    """What the engine needs of the model runner (local_engine.runner.ModelRunner)."""

    @property
    def num_blocks(self) -> int: ...

    @property
    def block_size(self) -> int: ...

    def run(self, batch: ScheduledBatch) -> StepOutput: ...


class DetokenizerLike(Protocol):
    def push(self, token_id: int) -> str: ...

    def flush(self) -> str: ...


@dataclass(frozen=True)
class RequestOutput:
    """What one step produced for one sequence (only sequences that sampled a token appear)."""

    seq_id: int
    request_id: str
    new_token_ids: tuple[int, ...]
    new_text: str
    finish_reason: FinishReason | None  # None while the sequence goes on
    num_prompt_tokens: int
    num_completion_tokens: int  # so far
    logprobs: Any = None  # the runner's entry for this token, when the request asked for logprobs
    first_scheduled_ns: int = 0  # unix ns when the engine first computed this request (for spans)
    num_cached_tokens: int = 0  # prompt tokens it found in the prefix cache (usage's cached_tokens)
    queue_wait: QueueWait | None = None  # on its first output: how it waited in the queue (for spans)


@dataclass(frozen=True)
class EngineStats:
    """The engine's own live numbers, as its state endpoint and metrics report them (the gateway's
    polled view of an engine is policies.live.EngineSnapshot)."""

    num_running: int
    num_waiting: int
    num_blocks_total: int
    num_blocks_free: int
    kv_usage: float  # share of blocks held by live sequences
    prefix_cache_hit_rate: float
    num_preemptions: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    # The prefix cache as a router across engines needs it (prefix affinity): on or off, how many
    # blocks it holds, and its lifetime counters (they restart at 0 when the engine does).
    prefix_caching: bool = False
    num_cached_blocks: int = 0
    prefix_queried_tokens: int = 0
    prefix_hit_tokens: int = 0
    # Lifetime step totals (local_engine.stats.StepTotals): steps, their wall and step-thread CPU seconds.
    num_steps_total: int = 0
    step_seconds_total: float = 0.0
    step_cpu_seconds_total: float = 0.0


class _SeqText:
    """Per-sequence text state: incremental detokenizer, stop strings and stop ids."""

    __slots__ = ("detok", "stop_ids", "stops")

    def __init__(self, seq: Sequence, detok: DetokenizerLike, eos_ids: frozenset[int]) -> None:
        self.detok = detok
        self.stops = StopStringFilter(seq.sampling.stop)
        ids = set(seq.sampling.stop_token_ids)
        if not seq.sampling.ignore_eos:
            ids |= eos_ids
        self.stop_ids = frozenset(ids)


class LLMEngine:
    def __init__(self, runner: RunnerLike, config: EngineConfig, *, eos_token_ids: tuple[int, ...],
                 detokenizer_factory: Callable[[], DetokenizerLike], max_model_len: int,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.runner = runner
        self.config = config
        self.block_size = runner.block_size
        self.block_manager = BlockManager(runner.num_blocks, runner.block_size, config.enable_prefix_caching)
        device = getattr(runner, "device", None)  # the budget's default depends on the device kind
        self.scheduler = Scheduler(config, self.block_manager, getattr(device, "type", "cpu"))
        self.max_model_len = max_model_len
        self.limits = EngineLimits(max_model_len=max_model_len, block_size=runner.block_size,
                                   num_blocks_total=self.block_manager.num_total_blocks,
                                   max_num_seqs=config.max_num_seqs, max_waiting=config.max_waiting)
        self._eos_ids = frozenset(eos_token_ids)
        self._new_detokenizer = detokenizer_factory
        self._texts: dict[int, _SeqText] = {}
        self._clock = clock
        self.throughput = ThroughputWindow(config.stats_window_s)
        self.totals = StepTotals()
        self.queue_steps = QueueSteps()

    # --- admission -------------------------------------------------------------------------
    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise RequestTooLarge for a request that could never run, even alone."""
        self.limits.check_fits(num_prompt_tokens, max_tokens)

    def max_new_tokens(self, num_prompt_tokens: int) -> int:
        """The most tokens a request with this prompt may ask for (the default when it names none)."""
        return self.limits.max_new_tokens(num_prompt_tokens)

    def add_request(self, seq: Sequence) -> None:
        self.check_fits(seq.num_prompt_tokens, seq.sampling.max_tokens)
        self._texts[seq.seq_id] = _SeqText(seq, self._new_detokenizer(), self._eos_ids)
        self.queue_steps.taken_in(seq, len(self.scheduler.waiting))
        self.scheduler.add(seq)

    def abort(self, seq_id: int) -> bool:
        """Stop a sequence now and free its blocks; False when it is unknown or already finished."""
        seq = self.scheduler.get(seq_id)
        if seq is None:
            return False
        self.scheduler.finish(seq, FinishReason.ABORT)
        self._texts.pop(seq_id, None)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # --- the step ----------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        num_waiting = len(self.scheduler.waiting)
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        if not batch.is_decode:  # the end of each new sequence's queue wait (engine spans)
            now_ns, decodes = time.time_ns(), batch.num_decodes
            for seq in batch.seqs[decodes:]:
                if not seq.first_scheduled_ns:
                    seq.first_scheduled_ns = now_ns
                    self.queue_steps.scheduled(seq, decodes, batch.total_tokens - decodes)
        self.queue_steps.stepped(num_waiting, num_waiting + len(batch.preempted_seq_ids) - len(self.scheduler.waiting))
        start, cpu_start = self._clock(), time.thread_time()
        out = self.runner.run(batch)  # a mixed step's decodes and prompt chunks in one forward pass
        end = self._clock()
        self._record(batch, end, end - start)
        self.totals.record(end - start, time.thread_time() - cpu_start)
        return self._postprocess(batch, out)

    def _record(self, batch: ScheduledBatch, end: float, seconds: float) -> None:
        """A step's time in the throughput window; a mixed step's split between its decode and its
        prefill tokens in proportion to their counts (one pass computes them together)."""
        total, decodes = batch.total_tokens, batch.num_decodes
        if 0 < decodes < batch.num_seqs:
            self.throughput.record(end, False, decodes, seconds * decodes / total)
            self.throughput.record(end, True, total - decodes, seconds * (total - decodes) / total)
        else:
            self.throughput.record(end, batch.is_prefill, total, seconds)

    def _postprocess(self, batch: ScheduledBatch, out: StepOutput) -> list[RequestOutput]:
        outputs: list[RequestOutput] = []
        bm = self.block_manager
        sampled_ids = out.token_ids
        logprobs = out.logprobs or None
        sampled_ns = 0  # the step's end, for the first tokens it sampled (spans)
        for i, seq in enumerate(batch.seqs):
            n = batch.num_scheduled_tokens[i]
            samples = seq.num_cached_tokens + n == len(seq.token_ids)
            seq.num_cached_tokens += n
            bm.cache_full_blocks(seq)
            if not samples:
                continue  # a prefill chunk that does not reach the end yet
            token_id = sampled_ids[i]
            if token_id is None:
                raise RuntimeError(f"runner sampled no token for sequence {seq.seq_id} at its last position")
            seq.token_ids.append(token_id)
            if seq.num_completion_tokens == 1:
                sampled_ns = sampled_ns or time.time_ns()
                self.queue_steps.sampled(seq, sampled_ns)
            text, reason = self._accept(seq, token_id)
            if reason is not None:
                self.scheduler.finish(seq, reason)
                del self._texts[seq.seq_id]
            outputs.append(RequestOutput(
                seq.seq_id, seq.request_id, (token_id,), text, reason, seq.num_prompt_tokens,
                seq.num_completion_tokens, logprobs[i] if logprobs is not None else None, seq.first_scheduled_ns,
                seq.num_prefix_hit_tokens or 0, seq.queue_wait if seq.num_completion_tokens == 1 else None))
        return outputs

    def _accept(self, seq: Sequence, token_id: int) -> tuple[str, FinishReason | None]:
        """The text a new token adds, and why the sequence stops (None: it goes on)."""
        state = self._texts[seq.seq_id]
        if token_id in state.stop_ids:  # the stop token's own text is never emitted
            text, _ = state.stops.push(state.detok.flush())
            return text + state.stops.flush(), FinishReason.STOP
        text, hit = state.stops.push(state.detok.push(token_id))
        if hit:
            return text, FinishReason.STOP
        if seq.num_completion_tokens >= seq.sampling.max_tokens or len(seq.token_ids) >= self.max_model_len:
            more, hit = state.stops.push(state.detok.flush())
            if hit:
                return text + more, FinishReason.STOP
            return text + more + state.stops.flush(), FinishReason.LENGTH
        return text, None

    # --- numbers -----------------------------------------------------------------------------
    def snapshot(self) -> EngineStats:
        bm = self.block_manager
        rates = self.throughput.rates(self._clock())
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            num_blocks_total=bm.num_total_blocks, num_blocks_free=bm.num_free_blocks, kv_usage=bm.usage,
            prefix_cache_hit_rate=bm.prefix_cache_hit_rate, num_preemptions=self.scheduler.num_preemptions,
            prefill_tokens_per_s=rates.prefill_tokens_per_s, decode_tokens_per_s=rates.decode_tokens_per_s,
            prefix_caching=bm.enable_prefix_caching, num_cached_blocks=bm.num_cached_blocks,
            prefix_queried_tokens=bm.num_queried_tokens, prefix_hit_tokens=bm.num_hit_tokens,
            num_steps_total=self.totals.num_steps, step_seconds_total=self.totals.seconds,
            step_cpu_seconds_total=self.totals.cpu_seconds)
