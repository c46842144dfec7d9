"""Runs the LLMEngine step loop in one background thread and hands each request's outputs to asyncio.

The thread owns the engine (no locks around it): requests and aborts reach it through an inbox,
outputs come back once per step via ``loop.call_soon_threadsafe``. Torch releases the GIL inside
its kernels, so the event loop keeps serving while a step runs.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Protocol

from local_engine.engine import EngineSnapshot, LLMEngine, RequestOutput
from local_engine.errors import EngineDead, EngineError, EngineFull
from local_engine.sequence import SamplingParams, Sequence
from local_engine.tracing import RequestTimes, RequestTracer

log = logging.getLogger(__name__)


class RequestObserver(Protocol):
    """Gets each request's latencies (the metrics module implements it)."""

    def first_token(self, ttft_s: float, num_prompt_tokens: int) -> None: ...

    def inter_token(self, itl_s: float) -> None: ...

    def finished(self, e2e_s: float, num_prompt_tokens: int, num_completion_tokens: int) -> None: ...


class RequestStream:
    """One request's outputs, as an async iterator; ``close()`` aborts it unless it has finished."""

    def __init__(self, owner: AsyncEngine, seq: Sequence, observer: RequestObserver | None,
                 trace_context: object | None = None) -> None:
        self.seq_id = seq.seq_id
        self.trace_context = trace_context  # the caller's W3C traceparent, for spans
        self._seq = seq  # read for its first_scheduled_ns when the request ends (spans)
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
            self._owner._abort(self.seq_id)
            self._queue.put_nowait(None)  # wake a reader waiting for the next output
            self._trace(aborted=True)

    def _trace(self, aborted: bool) -> None:
        tracer = self._owner.request_tracer
        if tracer is None or self.trace_context is None:
            return
        tracer.record(self.trace_context, RequestTimes(  # type: ignore[arg-type]
            self.arrival_ns, self._seq.first_scheduled_ns, self.first_token_ns, time.time_ns(),
            self.num_prompt_tokens, self.num_completion_tokens, aborted))

    def _deliver(self, out: RequestOutput, now: float) -> None:
        observer = self._observer
        self.num_completion_tokens = out.num_completion_tokens
        if self.first_token_at is None:
            self.first_token_at = now
            self.first_token_ns = time.time_ns()
            if observer is not None:
                observer.first_token(now - self.arrival, out.num_prompt_tokens)
        elif observer is not None:
            observer.inter_token(now - self._last_at)
        self._last_at = now
        if out.finish_reason is not None:
            self._done = True
            if observer is not None:
                observer.finished(now - self.arrival, out.num_prompt_tokens, out.num_completion_tokens)
            self._trace(aborted=False)
        self._queue.put_nowait(out)

    def _fail(self, exc: BaseException) -> None:
        self._done = True
        self._queue.put_nowait(exc)


class AsyncEngine:
    """The engine as asyncio sees it: ``submit``/``generate`` requests, read ``snapshot``."""

    def __init__(self, engine: LLMEngine, observer: RequestObserver | None = None) -> None:
        self.engine = engine
        self.max_waiting = engine.config.max_waiting
        self.observer = observer  # set before start (the server's metrics)
        self.request_tracer: RequestTracer | None = None  # set before start when traces are on
        self._cond = threading.Condition()
        self._inbox: list[Sequence | int] = []  # a Sequence to add, or a seq_id to abort
        self._num_pending_adds = 0
        self._stopping = False
        self._streams: dict[int, RequestStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._snapshot = engine.snapshot()
        self.dead_reason: str | None = None

    # --- lifecycle (event loop thread) ---------------------------------------------------------
    def start(self) -> None:
        """Start the step thread; call from the event loop that will consume the outputs."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-step-loop", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()
        self._fail_all(EngineDead("the engine is shutting down"))

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.dead_reason is None

    def snapshot(self) -> EngineSnapshot:
        return self._snapshot  # replaced whole by the step thread, so always consistent

    # --- requests (event loop thread) -----------------------------------------------------------
    def submit(self, prompt_token_ids: list[int], sampling: SamplingParams, *, priority: int = 0,
               request_id: str = "", trace_context: object | None = None) -> RequestStream:
        """Queue a request; raises RequestTooLarge, EngineFull or EngineDead before anything runs."""
        if not self.is_alive:
            raise EngineDead(self.dead_reason or "the engine is not running")
        self.engine.check_fits(len(prompt_token_ids), sampling.max_tokens)  # read-only: safe here
        num_waiting = self._snapshot.num_waiting + self._num_pending_adds
        if num_waiting >= self.max_waiting:
            raise EngineFull(num_waiting, self.max_waiting)
        seq = Sequence(list(prompt_token_ids), sampling, priority=priority, arrival_time=time.time(),
                       request_id=request_id)
        stream = RequestStream(self, seq, self.observer, trace_context)
        self._streams[seq.seq_id] = stream
        with self._cond:
            self._inbox.append(seq)
            self._num_pending_adds += 1
            self._cond.notify()
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

    def _abort(self, seq_id: int) -> None:
        self._streams.pop(seq_id, None)
        with self._cond:
            self._inbox.append(seq_id)
            self._cond.notify()

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        now = time.perf_counter()
        streams = self._streams
        for out in outputs:
            stream = streams.get(out.seq_id)
            if stream is None:
                continue  # aborted while the step ran
            if out.finish_reason is not None:
                del streams[out.seq_id]
            stream._deliver(out, now)

    def _reject(self, item: tuple[int, BaseException]) -> None:
        stream = self._streams.pop(item[0], None)
        if stream is not None:
            stream._fail(item[1])

    def _fail_all(self, exc: BaseException) -> None:
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._fail(exc)

    # --- the step thread ------------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        try:
            while True:
                with self._cond:
                    while not (self._inbox or self._stopping or engine.has_unfinished()):
                        if not self._cond.wait(timeout=1.0):
                            self._snapshot = engine.snapshot()  # let the "recent" window age
                    if self._stopping:
                        return
                    commands, self._inbox = self._inbox, []
                    self._num_pending_adds = 0
                    self._apply(commands)
                outputs = engine.step()
                self._snapshot = engine.snapshot()
                if outputs:
                    self._call_soon(self._dispatch, outputs)
        except Exception as exc:  # a runner failure: fail every request rather than hang them
            log.exception("engine step loop failed")
            self.dead_reason = f"engine step failed: {type(exc).__name__}: {exc}"
            self._call_soon(self._fail_all, EngineDead(self.dead_reason))

    def _apply(self, commands: list[Sequence | int]) -> None:
        engine = self.engine
        for command in commands:
            if isinstance(command, int):
                engine.abort(command)
                continue
            try:
                engine.add_request(command)
            except (EngineError, ValueError) as exc:  # submit checked it already; never kill the loop
                self._call_soon(self._reject, (command.seq_id, exc))
        if commands:
            self._snapshot = engine.snapshot()

    def _call_soon(self, callback: object, arg: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, arg)  # type: ignore[arg-type]
