"""The engine as asyncio sees it: requests in, each request's outputs out as an async stream.

Where the step loop itself runs is an EngineCore: a thread of this process (core_thread) or a
process of its own (core_process). Outputs reach the streams on the event loop's thread.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Protocol

from local_engine.admission import EngineLimits
from local_engine.engine import EngineStats, RequestOutput
from local_engine.errors import EngineDead, EngineFull
from local_engine.queue_wait import QueueWait
from local_engine.sequence import SamplingParams, Sequence
from local_engine.tracing import RequestTimes, RequestTracer


class CoreSink(Protocol):
    """What an EngineCore reports to, always on the event loop's thread."""

    def deliver(self, outputs: list[RequestOutput]) -> None: ...

    def reject(self, seq_id: int, exc: BaseException) -> None: ...

    def die(self, reason: str) -> None: ...


class EngineCore(Protocol):
    """Runs the LLMEngine's step loop somewhere; requests and aborts go in, outputs go to the sink."""

    limits: EngineLimits

    def start(self, sink: CoreSink) -> None: ...  # from the event loop that consumes the outputs

    def add(self, seq: Sequence) -> None: ...

    def abort(self, seq_id: int) -> None: ...

    def snapshot(self) -> EngineStats: ...

    def num_unapplied_adds(self) -> int: ...  # added, not yet in the engine's own waiting count

    def is_running(self) -> bool: ...

    def shutdown(self) -> None: ...


class RequestObserver(Protocol):
    """Gets each request's latencies and token counts (the metrics module implements it).

    TTFT and ITL are timed at outputs that carry text (what a client sees as content, as DESIGN
    defines them); tokens whose text is still held back (a stop string's possible start, an
    incomplete UTF-8 character) are counted but not timed.
    """

    def prefilled(self, num_prompt_tokens: int) -> None: ...  # the first token was sampled

    def generated(self, num_tokens: int) -> None: ...

    def first_token(self, ttft_s: float) -> None: ...

    def inter_token(self, itl_s: float) -> None: ...

    def finished(self, e2e_s: float, num_prompt_tokens: int, num_completion_tokens: int) -> None: ...


class RequestStream:
    """One request's outputs, as an async iterator; ``close()`` aborts it unless it has finished."""

    def __init__(self, owner: AsyncEngine, seq: Sequence, observer: RequestObserver | None,
                 trace_context: object | None = None) -> None:
        self.seq_id = seq.seq_id
        self.trace_context = trace_context  # the caller's W3C traceparent, for spans
        self.first_scheduled_ns = 0  # from the engine's outputs (spans)
        self.queue_wait: QueueWait | None = None  # likewise, from its first output
        self.arrival_ns = time.time_ns()
        self.first_token_ns = 0
        self.num_completion_tokens = 0
        self.request_id = seq.request_id
        self.num_prompt_tokens = seq.num_prompt_tokens
        self.arrival = time.perf_counter()
        self.first_token_at: float | None = None
        self._last_at = 0.0
        self._owner = owner
        self._observer = observer
        self._queue: asyncio.Queue[RequestOutput | BaseException | None] = asyncio.Queue()  # None: closed
        self._done = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self._done and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    async def next_batch(self) -> list[RequestOutput]:
        """Every output that has arrived (waits for at least one); [] at the end.

        A client that reads slower than the engine steps gets one merged chunk, not a backlog.
        """
        try:
            outs = [await self.__anext__()]
        except StopAsyncIteration:
            return []
        queue = self._queue
        while not queue.empty() and outs[-1].finish_reason is None:
            item = queue.get_nowait()
            if item is None:
                break
            if isinstance(item, BaseException):
                self._done = True
                raise item
            outs.append(item)
        return outs

    def close(self) -> None:
        """Abort the request (frees its KV blocks) unless it already finished; safe to call twice."""
        if not self._done:
            self._done = True
            self._owner.abort(self.seq_id)
            self._queue.put_nowait(None)  # wake a reader waiting for the next output
            self._trace(aborted=True)

    def _trace(self, aborted: bool, finished_ns: int = 0) -> None:
        tracer = self._owner.request_tracer
        if tracer is None or self.trace_context is None:
            return
        tracer.record(self.trace_context, RequestTimes(  # type: ignore[arg-type]
            self.arrival_ns, self.first_scheduled_ns, self.first_token_ns, finished_ns or time.time_ns(),
            self.num_prompt_tokens, self.num_completion_tokens, aborted, self.queue_wait))

    def _deliver(self, out: RequestOutput, now: float, now_ns: int) -> None:
        observer = self._observer
        if observer is not None:
            if self.num_completion_tokens == 0:
                observer.prefilled(out.num_prompt_tokens)
            observer.generated(out.num_completion_tokens - self.num_completion_tokens)
        self.num_completion_tokens = out.num_completion_tokens
        self.first_scheduled_ns = out.first_scheduled_ns
        if out.queue_wait is not None:
            self.queue_wait = out.queue_wait
        if out.new_text:  # the first token stamps TTFT only once it shows as content
            if self.first_token_at is None:
                self.first_token_at = now
                self.first_token_ns = now_ns
                if observer is not None:
                    observer.first_token(now - self.arrival)
            elif observer is not None:
                observer.inter_token(now - self._last_at)
            self._last_at = now
        if out.finish_reason is not None:
            self._done = True
            if observer is not None:
                observer.finished(now - self.arrival, out.num_prompt_tokens, out.num_completion_tokens)
            self._trace(aborted=False, finished_ns=now_ns)
        self._queue.put_nowait(out)

    def _fail(self, exc: BaseException) -> None:
        self._done = True
        self._queue.put_nowait(exc)


class AsyncEngine:
    """Requests as streams over an EngineCore: ``submit``/``generate``, ``snapshot``, ``limits``."""

    def __init__(self, core: EngineCore, observer: RequestObserver | None = None) -> None:
        self.core = core
        self.limits = core.limits
        self.observer = observer  # set before start (the server's metrics)
        self.request_tracer: RequestTracer | None = None  # set before start when traces are on
        self._streams: dict[int, RequestStream] = {}
        self._started = False
        self.dead_reason: str | None = None
        self.on_dead: Callable[[str], None] | None = None  # the CLI ends the server: a supervisor restarts it

    # --- lifecycle (event loop thread) ---------------------------------------------------------
    def start(self) -> None:
        """Start the core; call from the event loop that will consume the outputs."""
        self.core.start(self)
        self._started = True

    def shutdown(self) -> None:
        self.core.shutdown()
        self._fail_all(EngineDead("the engine is shutting down"))

    @property
    def is_alive(self) -> bool:
        return self._started and self.dead_reason is None and self.core.is_running()

    def snapshot(self) -> EngineStats:
        """The core's latest numbers, with requests accepted here but not yet in the step loop
        counted as waiting (admission counts them too: the state and the metrics must agree)."""
        snap = self.core.snapshot()
        pending = self.core.num_unapplied_adds()
        return replace(snap, num_waiting=snap.num_waiting + pending) if pending else snap

    # --- requests (event loop thread) -----------------------------------------------------------
    def submit(self, prompt_token_ids: list[int], sampling: SamplingParams, *, priority: int = 0,
               request_id: str = "", trace_context: object | None = None) -> RequestStream:
        """Queue a request; raises RequestTooLarge, EngineFull or EngineDead before anything runs."""
        if not self.is_alive:
            raise EngineDead(self.dead_reason or "the engine is not running")
        self.limits.check_fits(len(prompt_token_ids), sampling.max_tokens)
        num_waiting = self.snapshot().num_waiting
        if num_waiting >= self.limits.max_waiting:
            raise EngineFull(num_waiting, self.limits.max_waiting)
        seq = Sequence(list(prompt_token_ids), sampling, priority=priority, arrival_time=time.time(),
                       request_id=request_id)
        stream = RequestStream(self, seq, self.observer, trace_context)
        self._streams[seq.seq_id] = stream
        self.core.add(seq)
        return stream

    async def generate(self, prompt_token_ids: list[int], sampling: SamplingParams, *, priority: int = 0,
                       request_id: str = "") -> AsyncIterator[RequestOutput]:
        """Outputs of one request; leaving the loop early (or being cancelled) aborts it."""
        stream = self.submit(prompt_token_ids, sampling, priority=priority, request_id=request_id)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    def abort(self, seq_id: int) -> None:
        self._streams.pop(seq_id, None)
        self.core.abort(seq_id)

    # --- CoreSink: what the core reports (event loop thread) -------------------------------------
    def deliver(self, outputs: list[RequestOutput]) -> None:
        now, now_ns = time.perf_counter(), time.time_ns()  # one step's outputs arrive together
        streams = self._streams
        for out in outputs:
            stream = streams.get(out.seq_id)
            if stream is None:
                continue  # aborted while the step ran
            if out.finish_reason is not None:
                del streams[out.seq_id]
            stream._deliver(out, now, now_ns)

    def reject(self, seq_id: int, exc: BaseException) -> None:
        stream = self._streams.pop(seq_id, None)
        if stream is not None:
            stream._fail(exc)

    def die(self, reason: str) -> None:
        self.dead_reason = reason
        self._fail_all(EngineDead(reason))
        if self.on_dead is not None:
            self.on_dead(reason)

    def _fail_all(self, exc: BaseException) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._fail(exc)
