"""An EngineCore that runs the LLMEngine's step loop in one background thread of this process.

The thread owns the engine (no locks around it): requests and aborts reach it through an inbox,
outputs go back once per step via ``loop.call_soon_threadsafe``. Torch releases the GIL inside
its kernels, but every op re-takes it: on few cores the event loop and the step loop slow each
other down, which the process core (core_process) avoids.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from local_engine.async_engine import CoreSink
from local_engine.engine import EngineStats, LLMEngine
from local_engine.errors import EngineError
from local_engine.sequence import Sequence

log = logging.getLogger(__name__)


class ThreadCore:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.limits = engine.limits
        self._cond = threading.Condition()
        self._inbox: list[Sequence | int] = []  # a Sequence to add, or a seq_id to abort
        self._num_pending_adds = 0
        self._stopping = False
        self._snapshot = engine.snapshot()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: CoreSink | None = None
        self._thread: threading.Thread | None = None

    def start(self, sink: CoreSink) -> None:
        self._loop = asyncio.get_running_loop()
        self._sink = sink
        self._thread = threading.Thread(target=self._run, name="engine-step-loop", daemon=True)
        self._thread.start()

    def add(self, seq: Sequence) -> None:
        with self._cond:
            self._inbox.append(seq)
            self._num_pending_adds += 1
            self._cond.notify()

    def abort(self, seq_id: int) -> None:
        with self._cond:
            self._inbox.append(seq_id)
            self._cond.notify()

    def snapshot(self) -> EngineStats:
        return self._snapshot  # replaced whole by the step thread, so always consistent

    def num_unapplied_adds(self) -> int:
        return self._num_pending_adds

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    # --- the step thread ------------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine
        sink = self._sink
        assert sink is not None
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
                    self._apply(commands, sink)
                outputs = engine.step()
                self._snapshot = engine.snapshot()
                if outputs:
                    self._call_soon(sink.deliver, outputs)
        except Exception as exc:  # a runner failure: fail every request rather than hang them
            log.exception("engine step loop failed")
            self._call_soon(sink.die, f"engine step failed: {type(exc).__name__}: {exc}")

    def _apply(self, commands: list[Sequence | int], sink: CoreSink) -> None:
        engine = self.engine
        for command in commands:
            if isinstance(command, int):
                engine.abort(command)
                continue
            try:
                engine.add_request(command)
            except (EngineError, ValueError) as exc:  # submit checked it already; never kill the loop
                self._call_soon(sink.reject, command.seq_id, exc)
        if commands:
            self._snapshot = engine.snapshot()

    def _call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)
