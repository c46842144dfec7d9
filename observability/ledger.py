"""The usage ledger: the gateway's UsageSink. `submit()` appends to an in-memory queue (O(1), never
blocks); a writer thread stores batches off the request path, spills them to a local file while the
store is down or refusing, and replays the file (with back-off) once it is back. Nothing is dropped:
a record no store can take (poison) goes to the dead-letter file. The thread survives any error."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from observability.batch_writer import BatchWriter, RecordsFailed
from observability.spill import SpillFile
from observability.stores import StoreRefused, StoreUnavailable, UsageStore
from observability.task_status import TaskState, TaskStatus
from observability.usage import UsageRecord
from observability.wiring import open_store

log = logging.getLogger(__name__)
OBSERVE_TURN_S = 0.0005  # the longest the observers (metrics) hold the GIL before the event loop gets a turn


@dataclass(frozen=True)
class LedgerConfig:
    batch_size: int = 256
    flush_interval_s: float = 0.2  # longest a record waits in memory while traffic is light
    retry_interval_s: float = 1.0  # first back-off after a failure; doubles up to max_backoff_s
    max_backoff_s: float = 10.0  # records wait on disk meanwhile; a recovered store is seen within this
    max_attempts: int = 5  # a record that fails this often on its own (store otherwise fine) is poison
    # /readyz turns 503 once the store has *refused* writes (OOM, READONLY, ...) this long in a row.
    # An unreachable store does not count: every replica sees that outage, and the spill holds it.
    # The gateway sets it from HYBRIDGW_LEDGER_UNREADY_AFTER_S (Settings.ledger_unready_after_s).
    unready_after_s: float = 30.0


@dataclass
class LedgerStats:
    submitted: int = 0
    written: int = 0  # new records the store accepted (replays included)
    spilled: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    store_down: bool = False


@dataclass(frozen=True)
class LedgerHealth:
    """What /readyz shows of the ledger."""

    writer: TaskState
    queued: int  # in memory, not yet stored or spilled
    spill_pending: bool  # records wait in spill files for the store
    dead_lettered: int  # records moved to the dead-letter file by this process
    store_down: bool
    failing: bool  # persistently unable to write: this replica should take no traffic


class Ledger:
    def __init__(self, store: UsageStore, *, spill: SpillFile | None = None, config: LedgerConfig = LedgerConfig(),
                 observers: Sequence[Callable[[UsageRecord], None]] = ()) -> None:
        """observers: called on the writer thread with every record before it is stored (e.g.
        RequestMetrics.record), so per-token metric work stays off the request path."""
        self.store = store
        self._observers = tuple(observers)
        self.stats = LedgerStats()
        self.status = TaskStatus("ledger_writer", base_s=config.retry_interval_s, cap_s=config.max_backoff_s)
        self._spill = spill
        self._config = config
        self._queue: deque[UsageRecord] = deque()  # append/popleft are atomic: no lock on the hot path
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._stopping = False
        self._in_flight = 0
        self._requeued = 0  # records at the queue's head that went back after a failed write
        self._next_probe = 0.0
        self._writer = BatchWriter(store, spill.dead_letter if spill is not None else None, config.max_attempts)
        self._refused_since: float | None = None  # monotonic start of the current run of refusals
        self._spill_failing = False  # records only in memory: the spill file cannot be written
        self._thread: threading.Thread | None = None

    def start(self) -> Ledger:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hybridgw-ledger", daemon=True)
            self._thread.start()
            self.status.ok()
        return self

    def submit(self, record: UsageRecord) -> None:
        self._queue.append(record)
        self.stats.submitted += 1
        if len(self._queue) >= self._config.batch_size:
            self._wake.set()

    def health(self) -> LedgerHealth:
        refused = self._refused_since is not None and \
            time.monotonic() - self._refused_since >= self._config.unready_after_s
        dead = self._thread is not None and not self._thread.is_alive()
        return LedgerHealth(self.status.snapshot(), len(self._queue) + self._in_flight,
                            self._spill is not None and self._spill.has_pending(), self.stats.dead_lettered,
                            self.stats.store_down, refused or self._spill_failing or dead)

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
                log.error("usage ledger did not finish within %.1f s; %d records not written (last error: %s)",
                          timeout_s, len(self._queue) + self._in_flight, self.status.snapshot().last_error)
                return
        if self._queue:  # never started (or its thread is gone): write what is queued from here
            self._guarded_drain()
        if self._queue:
            log.error("usage ledger closed with %d records not written (last error: %s)", len(self._queue),
                      self.status.snapshot().last_error)
        self.status.stopped()
        if self._spill is not None:
            self._spill.close()

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """close() without blocking the event loop (for an app's lifespan shutdown)."""
        await asyncio.to_thread(self.close, timeout_s)

    def _run(self) -> None:
        delay = self._config.flush_interval_s
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            delay = self._guarded_drain()
            if self._stopping and (not self._queue or (self.stats.store_down and self._spill is None)
                                   or self._spill_failing):
                if self._queue:
                    log.error("usage store down at shutdown: %d records not written", len(self._queue))
                return

    def _guarded_drain(self) -> float:
        """One round; whatever goes wrong, the thread lives on. Returns how long to wait next."""
        try:
            self._drain_once()
        except Exception as exc:  # a bug or an unforeseen error: report it, back off, try again
            log.exception("usage ledger writer failed; retrying")
            self._next_probe = time.monotonic() + self.status.failed(exc)
        if self._queue:  # records held in memory (nowhere to put them): wait out the back-off
            return max(self._config.flush_interval_s, self._next_probe - time.monotonic())
        return self._config.flush_interval_s

    def _drain_once(self) -> None:
        while self._queue:
            batch, already_observed = self._take_batch()
            self._observe(batch[already_observed:])
            try:
                kept = self._write(batch)
            except BaseException:
                self._requeue(batch)  # never lose what was taken from the queue
                raise
            finally:
                with self._idle:
                    self._in_flight = 0
                    self._idle.notify_all()
            if not kept:
                break  # back in the queue: retry after the back-off
        self._maybe_replay()

    def _observe(self, batch: list[UsageRecord]) -> None:
        turn_ends = time.perf_counter() + OBSERVE_TURN_S
        for record in batch:
            for observer in self._observers:
                try:
                    observer(record)
                except Exception:  # a metrics bug must not cost a usage record
                    log.exception("usage observer %r failed", observer)
            if time.perf_counter() >= turn_ends:
                # Let the event loop thread take the GIL back every OBSERVE_TURN_S, not after every record:
                # each hand-off costs both threads a wake-up (a sleep(0) per record was ~0.1 ms of this
                # thread's CPU per request under load).
                time.sleep(0)
                turn_ends = time.perf_counter() + OBSERVE_TURN_S

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

    def _requeue(self, batch: list[UsageRecord]) -> None:
        self._queue.extendleft(reversed(batch))
        self._requeued += len(batch)

    def _write(self, batch: list[UsageRecord]) -> bool:
        """Store the batch, else spill it, else put it back in the queue (then False)."""
        if self.stats.store_down and self._spill is not None and time.monotonic() < self._next_probe:
            return self._to_spill(batch)
        try:
            self._store(batch)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            if self._spill is None:
                self._requeue(batch)
                return False
            return self._to_spill(batch)
        except RecordsFailed as exc:  # the store works; these records go round again after a back-off
            self._next_probe = time.monotonic() + self.status.failed(exc)
            if self._spill is not None:
                return self._to_spill(exc.records)
            self._requeue(exc.records)
            return False
        self._store_ok()
        return True

    def _store(self, batch: list[UsageRecord]) -> None:
        try:
            self.stats.written += self._writer.write(batch)
        finally:
            self.stats.dead_lettered = self._writer.dead_lettered

    def _store_failed(self, exc: StoreUnavailable) -> None:
        if not self.stats.store_down:
            log.warning("usage store %s (%s); %s", "refusing writes" if isinstance(exc, StoreRefused)
                        else "unavailable", exc, "spilling to disk" if self._spill else "retrying")
        self.stats.store_down = True
        if not isinstance(exc, StoreRefused):
            self._refused_since = None  # unreachable now: an outage every replica shares (fail-open)
        elif self._refused_since is None:
            self._refused_since = time.monotonic()
        self._next_probe = time.monotonic() + self.status.failed(exc)

    def _store_ok(self) -> None:
        self.stats.store_down = False
        self._refused_since = None
        self._spill_failing = False  # what was held in memory went to the store
        self.status.ok()

    def _to_spill(self, batch: list[UsageRecord]) -> bool:
        assert self._spill is not None
        try:
            self._spill.append(batch)
        except OSError as exc:  # disk full, too many open files: keep them in memory and retry
            if not self._spill_failing:
                log.error("usage spill file cannot be written (%s); %d records held in memory", exc, len(batch))
            self._spill_failing = True
            self._next_probe = time.monotonic() + self.status.failed(f"spill: {type(exc).__name__}: {exc}")
            self._requeue(batch)
            return False
        self._spill_failing = False
        self.stats.spilled += len(batch)
        return True

    def _maybe_replay(self) -> None:
        if self._spill is None or not self._spill.has_pending() or time.monotonic() < self._next_probe:
            return
        if self.stats.store_down and not self.store.ping():
            self._next_probe = time.monotonic() + self.status.failed("usage store unavailable")
            return
        try:
            self.stats.replayed += self._spill.replay(self._store)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return
        except RecordsFailed as exc:  # left in their file for the next replay
            self._next_probe = time.monotonic() + self.status.failed(exc)
            return
        if self.stats.store_down or self.status.snapshot().state == "retrying":
            log.info("usage store back; spilled records replayed")
        self._store_ok()


def open_ledger(redis_url: str | None, data_dir: Path, config: LedgerConfig = LedgerConfig(),
                observers: Sequence[Callable[[UsageRecord], None]] = ()) -> Ledger:
    """The gateway's ledger: the configured store, spilling to <data_dir>/spill; not yet started."""
    return Ledger(open_store(redis_url, data_dir), spill=SpillFile(Path(data_dir) / "spill"), config=config,
                  observers=observers)
