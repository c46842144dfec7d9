"""Records that could not reach the store wait in local append-only JSONL files until it is back.

Each process appends to its own file and holds an exclusive flock on it while it is open, so a
file nobody holds (its writer closed it or died) can be replayed by any process on the host.
Replays may repeat records; the stores are idempotent by request_id, so that never double-counts.
Records no store can take (poison) and lines that no longer parse go to dead-letter.jsonl, kept for
an operator and never replayed automatically.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from observability.usage import UsageRecord

log = logging.getLogger(__name__)


DEAD_LETTER_NAME = "dead-letter.jsonl"
# Records per write on a replay, read from the file as they go: a whole outage's file read at once (2,000+
# records at 410 req/s for 5 s) grew pymalloc by ~9 arenas that stayed (docs/benchmarks.md, session 12).
REPLAY_BATCH = 256


class DeadLetter:
    """Append-only, fsynced file of what will never be stored: {"reason", "record"} or {"reason", "line"}."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.count = 0  # entries this process added

    def add_record(self, record: UsageRecord, reason: str) -> None:
        self._append({"reason": reason, "record": record.to_dict()})

    def add_line(self, line: str, reason: str) -> None:
        self._append({"reason": reason, "line": line})

    def _append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # default=str: a poison record may hold what JSON cannot (it is kept for a person to read)
        text = json.dumps(entry, separators=(",", ":"), default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, text.encode("utf-8", "backslashreplace"))  # one write: lines of processes never mix
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += 1


class SpillFile:
    def __init__(self, directory: Path, dead_letter: DeadLetter | None = None) -> None:
        self.directory = Path(directory)
        self.dead_letter = dead_letter or DeadLetter(self.directory / DEAD_LETTER_NAME)
        self._active: IO[str] | None = None
        self._active_path: Path | None = None

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Durably append records (one JSON line each; flushed and fsynced before returning). On an
        error (disk full, too many open files) the file is closed, so a torn line ends that file."""
        text = "".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in records)
        handle = self._open_active()
        try:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            self._close_active()
            raise

    def _open_active(self) -> IO[str]:
        if self._active is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"spill-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            handle = open(path, "a", encoding="utf-8")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            self._active, self._active_path = handle, path
        return self._active

    def _close_active(self) -> None:
        if self._active is not None:
            try:
                self._active.close()  # releases the flock: the file becomes replayable
            except OSError as exc:  # its buffer could not be flushed: those lines were never acknowledged
                log.warning("spill %s: close failed: %s", self._active_path, exc)
            self._active = self._active_path = None

    def has_pending(self) -> bool:
        try:
            return self._active is not None or any(self.directory.glob("spill-*.jsonl"))
        except OSError:  # e.g. too many open files to list the folder: assume records wait there
            return True

    def replay(self, write: Callable[[list[UsageRecord]], object], batch_size: int = REPLAY_BATCH) -> int:
        """Hand every unheld spill file to `write` in batches, read as they go (one batch in memory, not
        a whole outage's file), deleting each file once all of it is written. `write` raising stops the
        replay and leaves the rest for the next try."""
        self._close_active()
        replayed = 0
        for path in sorted(self.directory.glob("spill-*.jsonl")):
            replayed += self._replay_file(path, write, batch_size)
        return replayed

    def _replay_file(self, path: Path, write: Callable[[list[UsageRecord]], object], batch_size: int) -> int:
        try:
            handle = open(path, encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return 0  # another process replayed it meanwhile
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its writer is alive and still appending
            if os.fstat(handle.fileno()).st_nlink == 0:
                return 0  # replayed and deleted by another process while we waited
            replayed = 0
            for batch in _batches(handle, path, self.dead_letter, batch_size):
                write(batch)
                replayed += len(batch)
            path.unlink()
            return replayed

    def close(self) -> None:
        self._close_active()


def _batches(handle: IO[str], path: Path, dead_letter: DeadLetter, size: int) -> Iterator[list[UsageRecord]]:
    """The file's records, `size` at a time, as it is read."""
    batch: list[UsageRecord] = []
    for record in _read_records(handle, path, dead_letter):
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_records(handle: IO[str], path: Path, dead_letter: DeadLetter) -> Iterator[UsageRecord]:
    for number, line in enumerate(handle, 1):
        if not line.endswith("\n"):
            # a torn last line: the writer died mid-append, before that record was acknowledged
            log.warning("spill %s: skipping torn line %d", path.name, number)
            continue
        try:
            yield UsageRecord.from_dict(json.loads(line))
        except (ValueError, TypeError, AttributeError) as exc:  # a corrupt line must not block the rest
            log.error("spill %s: line %d does not parse (%s); moved to %s", path.name, number, exc,
                      dead_letter.path.name)
            dead_letter.add_line(line.rstrip("\n"), f"spill line does not parse: {exc}")
