"""The usage ledger: the gateway's UsageSink. `submit()` appends to an in-memory queue (O(1), never
blocks); a writer thread stores batches off the request path, spills them to a local file while the
store is down, and replays the file once it is back. Nothing is dropped on the way."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from observability.spill import SpillFile
from observability.stores import StoreUnavailable, UsageStore, open_store
from observability.usage import UsageRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerConfig:
    batch_size: int = 256
    flush_interval_s: float = 0.2  # longest a record waits in memory while traffic is light
    retry_interval_s: float = 1.0  # how often a down store is probed


@dataclass
class LedgerStats:
    submitted: int = 0
    written: int = 0  # new records the store accepted (replays included)
    spilled: int = 0
    replayed: int = 0
    store_down: bool = False


class Ledger:
    def __init__(self, store: UsageStore, *, spill: SpillFile | None = None, config: LedgerConfig = LedgerConfig(),
                 observers: Sequence[Callable[[UsageRecord], None]] = ()) -> None:
        """observers: called on the writer thread with every record before it is stored (e.g.
        RequestMetrics.record), so per-token metric work stays off the request path."""
        self.store = store
        self._observers = tuple(observers)
        self.stats = LedgerStats()
        self._spill = spill
        self._config = config
        self._queue: deque[UsageRecord] = deque()  # append/popleft are atomic: no lock on the hot path
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._requeued = 0  # records at the queue's head that went back after a failed write
        self._next_probe = 0.0
        self._thread: threading.Thread | None = None

    def start(self) -> Ledger:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hybridgw-ledger", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: UsageRecord) -> None:
        self._queue.append(record)
        self.stats.submitted += 1
        if len(self._queue) >= self._config.batch_size:
            self._wake.set()

    def flush(self, timeout_s: float = 10.0, *, include_spill: bool = False) -> bool:
        """Wait until every submitted record is in the store or the spill file (with include_spill:
        in the store, spill replayed); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._idle:
                done = not self._queue and not self._in_flight
            if done and include_spill:
                done = self._spill is None or not self._spill.has_pending()
            if done:
                return True
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            with self._idle:
                self._idle.wait(0.05)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write (or spill) what is queued, then stop the writer. Called at gateway shutdown."""
        self._stopping = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.error("usage ledger did not finish within %.1f s; %d records queued", timeout_s, len(self._queue))
                return
        elif self._queue:  # never started: write what is queued from here
            self._drain_once()
        if self._spill is not None:
            self._spill.close()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """close() without blocking the event loop (for an app's lifespan shutdown)."""
        await asyncio.to_thread(self.close, timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._config.flush_interval_s)
            self._wake.clear()
            self._drain_once()
            if self._stopping and (not self._queue or (self.stats.store_down and self._spill is None)):
                if self._queue:
                    log.error("usage store down at shutdown: %d records not written", len(self._queue))
                return

    def _drain_once(self) -> None:
        while self._queue:
            batch, already_observed = self._take_batch()
            self._observe(batch[already_observed:])
            try:
                kept = self._write(batch)
            finally:
                with self._idle:
                    self._in_flight = 0
                    self._idle.notify_all()
            if not kept:
                break  # back in the queue (no spill file): retry on the next tick
        self._maybe_replay()

    def _observe(self, batch: list[UsageRecord]) -> None:
        for record in batch:
            for observer in self._observers:
                try:
                    observer(record)
                except Exception:  # a metrics bug must not cost a usage record
                    log.exception("usage observer %r failed", observer)
            time.sleep(0)  # let the event loop thread take the GIL between records

    def _take_batch(self) -> tuple[list[UsageRecord], int]:
        """The next batch, and how many of its first records were observed before (then requeued)."""
        batch: list[UsageRecord] = []
        with self._idle:
            while self._queue and len(batch) < self._config.batch_size:
                batch.append(self._queue.popleft())
            self._in_flight = len(batch)
        already_observed = min(self._requeued, len(batch))
        self._requeued -= already_observed
        return batch, already_observed

    def _write(self, batch: list[UsageRecord]) -> bool:
        """Store the batch, else spill it, else put it back in the queue (then False)."""
        if self.stats.store_down and self._spill is not None and time.monotonic() < self._next_probe:
            self._to_spill(batch)
            return True
        try:
            self.stats.written += self.store.write_batch(batch)
            self.stats.store_down = False
            return True
        except StoreUnavailable as exc:
            if not self.stats.store_down:
                log.warning("usage store unavailable (%s); %s", exc, "spilling to disk" if self._spill else "retrying")
            self.stats.store_down = True
            self._next_probe = time.monotonic() + self._config.retry_interval_s
            if self._spill is None:
                self._queue.extendleft(reversed(batch))
                self._requeued += len(batch)
                return False
            self._to_spill(batch)
            return True

    def _to_spill(self, batch: list[UsageRecord]) -> None:
        assert self._spill is not None
        self._spill.append(batch)
        self.stats.spilled += len(batch)

    def _maybe_replay(self) -> None:
        if self._spill is None or not self._spill.has_pending() or time.monotonic() < self._next_probe:
            return
        if self.stats.store_down and not self.store.ping():
            self._next_probe = time.monotonic() + self._config.retry_interval_s
            return
        try:
            self.stats.replayed += self._spill.replay(self._write_replayed)
            self.stats.store_down = False
            log.info("usage store back; spilled records replayed")
        except StoreUnavailable:
            self.stats.store_down = True
            self._next_probe = time.monotonic() + self._config.retry_interval_s

    def _write_replayed(self, batch: list[UsageRecord]) -> None:
        self.stats.written += self.store.write_batch(batch)


def open_ledger(redis_url: str | None, data_dir: Path, config: LedgerConfig = LedgerConfig(),
                observers: Sequence[Callable[[UsageRecord], None]] = ()) -> Ledger:
    """The gateway's ledger: the configured store, spilling to <data_dir>/spill; not yet started."""
    return Ledger(open_store(redis_url, data_dir), spill=SpillFile(Path(data_dir) / "spill"), config=config,
                  observers=observers)
