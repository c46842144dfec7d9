"""Log lines leave the event loop through a queue and are written by one thread: the loop only enqueues
(an access line is not even formatted there, gateway/access_log.py), and the thread writes every line
that waited in one write, so a busy gateway makes one system call per batch, not one per request."""
from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
from typing import TextIO

from gateway.access_log import AccessRecord

_STOP = object()


class LazyQueueHandler(logging.handlers.QueueHandler):
    """QueueHandler that enqueues an AccessRecord as it is (immutable; its text is made by the writer)
    instead of formatting and copying it on the caller's thread, as it does other records."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record if isinstance(record, AccessRecord) else super().prepare(record)


class LogThread:
    """Takes records off the queue, formats them and writes all that waited in one write (at most
    `batch` lines; the stream is flushed after each write)."""

    def __init__(self, records: queue.SimpleQueue[object], stream: TextIO, formatter: logging.Formatter,
                 batch: int = 512) -> None:
        self._records, self._stream, self._formatter, self._batch = records, stream, formatter, batch
        self._thread = threading.Thread(target=self._run, name="hybridgw-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self._records.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._records.get()]
            while len(batch) < self._batch:
                try:
                    batch.append(self._records.get_nowait())
                except queue.Empty:
                    break
            lines = [self._line(r) for r in batch if r is not _STOP]
            if lines:
                self._write(lines)
            if any(r is _STOP for r in batch):
                return

    def _line(self, record: object) -> str:
        try:
            return self._formatter.format(record)  # type: ignore[arg-type]
        except Exception as exc:  # one bad record must not stop the log
            return f"hybridgw: a log record could not be formatted: {exc!r}"

    def _write(self, lines: list[str]) -> None:
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing else to tell it to
            pass


def start_log_thread(logger: logging.Logger, level: str, stream: TextIO) -> LogThread:
    """Route `logger` (and the loggers under it) through a queue to a LogThread writing to `stream`."""
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    writer = LogThread(records, stream, logging.Formatter("%(message)s"))
    logger.handlers[:] = [LazyQueueHandler(records)]  # type: ignore[arg-type]
    logger.setLevel(level.upper())
    logger.propagate = False
    writer.start()
    return writer
