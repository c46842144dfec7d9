"""Log lines leave the event loop through a queue and are written by one thread: the loop only enqueues
(an access line is not even formatted there, gateway/access_log.py), and the thread writes all that
waited a few times a second, in writes of up to 4 KiB of whole lines: one wake-up per batch, not per request."""
from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
from typing import TextIO

from gateway.access_log import AccessRecord

ATOMIC_WRITE_BYTES = 4096  # POSIX's PIPE_BUF on Linux (the least it may be is 512): a write this size is atomic


class LazyQueueHandler(logging.handlers.QueueHandler):
    """QueueHandler that enqueues an AccessRecord as it is (immutable; its text is made by the writer)
    instead of formatting and copying it on the caller's thread, as it does other records; a warning or
    worse wakes the writer at once (`wake`), so it is out before a crash that may follow it."""

    def __init__(self, records: queue.SimpleQueue[object], wake: threading.Event | None = None) -> None:
        super().__init__(records)  # type: ignore[arg-type]
        self._wake = wake

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record if isinstance(record, AccessRecord) else super().prepare(record)

    def enqueue(self, record: logging.LogRecord) -> None:
        super().enqueue(record)
        if record.levelno >= logging.WARNING and self._wake is not None:
            self._wake.set()


class LogThread:
    """Every `interval_s` (or when woken) takes all that is queued, formats it and writes it in as few
    writes as keep each one atomic (atomic_pieces; the stream is flushed after each). It polls rather than
    waits on the queue: a blocked get() would be woken by each put, one thread switch per access line; such
    a line waits at most `interval_s`. stop() writes the rest."""

    def __init__(self, records: queue.SimpleQueue[object], stream: TextIO, formatter: logging.Formatter,
                 interval_s: float = 0.05) -> None:
        self._records, self._stream, self._formatter, self._interval_s = records, stream, formatter, interval_s
        # the gateway's formatter writes the message alone: an access line is then its own text, no formatting
        self._message_only = type(formatter) is logging.Formatter and formatter._fmt == "%(message)s"
        self.wake = threading.Event()  # set by LazyQueueHandler for a warning or worse, and by stop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hybridgw-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._stopping = True
        self.wake.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.wake.wait(self._interval_s)
            self.wake.clear()
            stopping = self._stopping  # read before draining: what was queued before stop() is written
            batch: list[object] = []
            while True:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            if batch:
                self._write([self._line(r) for r in batch])
            if stopping:
                return

    def _line(self, record: object) -> str:
        try:
            if self._message_only and record.__class__ is AccessRecord:
                return record.getMessage()  # type: ignore[attr-defined]
            return self._formatter.format(record)  # type: ignore[arg-type]
        except Exception as exc:  # one bad record must not stop the log
            return f"hybridgw: a log record could not be formatted: {exc!r}"

    def _write(self, lines: list[str]) -> None:
        try:
            for piece in atomic_pieces(lines):
                self._stream.write(piece)
                self._stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing else to tell it to
            pass


def atomic_pieces(lines: list[str], limit: int = ATOMIC_WRITE_BYTES) -> list[str]:
    """The lines, newline-ended, joined into pieces of whole lines of at most `limit` bytes each (a longer
    line alone): the workers of `serve --workers N` share stderr, and only a write of at most PIPE_BUF
    bytes to a pipe is never interleaved with another process's, so no line is torn by another worker's."""
    pieces: list[str] = []
    part: list[str] = []
    size = 0
    for line in lines:
        n = (len(line) if line.isascii() else len(line.encode())) + 1
        if part and size + n > limit:
            pieces.append("\n".join(part) + "\n")
            part, size = [], 0
        part.append(line)
        size += n
    if part:
        pieces.append("\n".join(part) + "\n")
    return pieces


def start_log_thread(logger: logging.Logger, level: str, stream: TextIO) -> LogThread:
    """Route `logger` (and the loggers under it) through a queue to a LogThread writing to `stream`."""
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    writer = LogThread(records, stream, logging.Formatter("%(message)s"))
    logger.handlers[:] = [LazyQueueHandler(records, writer.wake)]
    logger.setLevel(level.upper())
    logger.propagate = False
    writer.start()
    return writer
