"""The event loop's default executor (asyncio.to_thread, run_in_executor(None, ...)) with workers that exit
after `idle_s` without work: a burst (a Redis outage's blocked key lookups) no longer leaves threads, their
stacks and malloc arenas for good (docs/benchmarks.md, session 12)."""
from __future__ import annotations

import itertools
import os
import queue
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as _thread
from typing import Any

IDLE_S = 60.0  # a worker with nothing to do for this long exits (the next burst starts new ones)


class IdleExitExecutor(ThreadPoolExecutor):
    """ThreadPoolExecutor whose workers exit when idle for `idle_s`. Same queue, same shutdown; only the
    worker loop differs: an idle worker retires by taking back its own idle token (so a task submitted
    meanwhile, counting on an idle worker, is still taken)."""

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "hybridgw-executor",
                 idle_s: float = IDLE_S) -> None:
        super().__init__(max_workers or min(32, (os.cpu_count() or 1) + 4), thread_name_prefix)
        self._idle_s = idle_s
        self._names = itertools.count()
        self.retired = 0  # workers that exited for want of work

    def _adjust_thread_count(self) -> None:  # called by submit, holding _shutdown_lock
        if self._idle_semaphore.acquire(timeout=0):
            return  # an idle worker will take it

        def weakref_cb(_: Any, q: queue.SimpleQueue[Any] = self._work_queue) -> None:
            q.put(None)

        if len(self._threads) < self._max_workers:
            t = threading.Thread(name=f"{self._thread_name_prefix}_{next(self._names)}", target=_idle_worker,
                                 args=(weakref.ref(self, weakref_cb), self._work_queue, self._idle_s), daemon=True)
            t.start()
            self._threads.add(t)
            _thread._threads_queues[t] = self._work_queue  # joined at interpreter exit, as the stdlib's

    def _retire(self) -> bool:
        """An idle worker's exit: True when its idle token was still free (no task counts on it)."""
        with self._shutdown_lock:
            if not self._idle_semaphore.acquire(timeout=0):
                return False
            self._threads.discard(threading.current_thread())
            self.retired += 1
            return True


def _idle_worker(executor_ref: weakref.ref[IdleExitExecutor], work_queue: queue.SimpleQueue[Any],
                 idle_s: float) -> None:
    """The stdlib's worker loop (concurrent/futures/thread.py), with an idle timeout."""
    while True:
        try:
            item = work_queue.get(block=True, timeout=idle_s)
        except queue.Empty:
            executor = executor_ref()
            if executor is None or executor._retire():
                return
            del executor
            continue
        if item is not None:
            item.run()
            del item
            executor = executor_ref()
            if executor is not None:
                executor._idle_semaphore.release()
            del executor
            continue
        executor = executor_ref()  # None: the shutdown's (or the executor's collection's) wake-up
        if _thread._shutdown or executor is None or executor._shutdown:
            if executor is not None:
                executor._shutdown = True
            work_queue.put(None)  # wake the next worker up to exit too
            return
        del executor
