"""Writes batches of usage records to a store so that one bad record never holds up the others:
records no store can hold (poison) go straight to the dead-letter file; a batch that fails with an
error no rule foresaw is retried record by record, and a record that keeps failing on its own is
dead-lettered after `max_attempts`. Store outages (StoreUnavailable) are the caller's to handle."""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from observability.spill import DeadLetter
from observability.stores import StoreUnavailable, UsageStore, record_problem
from observability.usage import UsageRecord

log = logging.getLogger("observability.ledger")


class RecordsFailed(Exception):
    """Some records failed on their own with an unexpected error; they are to be retried later."""

    def __init__(self, records: list[UsageRecord], cause: BaseException) -> None:
        super().__init__(f"{len(records)} record(s) failed: {type(cause).__name__}: {cause}")
        self.records = records


class BatchWriter:
    def __init__(self, store: UsageStore, dead_letter: DeadLetter | None, max_attempts: int = 5) -> None:
        self.store = store
        self.dead_letter = dead_letter
        self.max_attempts = max_attempts
        self.dead_lettered = 0
        self._attempts: dict[str, int] = {}  # request_id → failures on its own with an unexpected error

    def write(self, batch: Sequence[UsageRecord]) -> int:
        """Store the batch; returns how many records were new. Raises StoreUnavailable (nothing or
        part written: retry it all, the store is idempotent) or RecordsFailed (the others are written)."""
        good = [r for r in batch if not self._poisoned(r)]
        if not good:
            return 0
        try:
            written = self.store.write_batch(good)
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 (any other error: retried record by record below)
            cause: BaseException = exc
        else:
            self._forget(good)
            return written
        written, failed = self._one_by_one(good) if len(good) > 1 else (0, [(good[0], cause)])
        self._forget([r for r in good if all(r is not f for f, _ in failed)])
        retry = [record for record, error in failed if not self._gave_up(record, error)]
        if retry:
            raise RecordsFailed(retry, failed[-1][1])
        return written

    def _one_by_one(self, records: list[UsageRecord]) -> tuple[int, list[tuple[UsageRecord, BaseException]]]:
        """Write each record alone: (how many were new, the records that failed and why)."""
        written, failed = 0, []
        for record in records:
            try:
                written += self.store.write_batch([record])
            except StoreUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 (this record is retried, then dead-lettered)
                failed.append((record, exc))
        return written, failed

    def _forget(self, written: list[UsageRecord]) -> None:
        if self._attempts:  # records that failed before and are stored now
            for record in written:
                self._attempts.pop(record.request_id, None)

    def _poisoned(self, record: UsageRecord) -> bool:
        problem = record_problem(record)
        if problem is not None:
            self._dead_letter(record, f"never storable: {problem}")
        return problem is not None

    def _gave_up(self, record: UsageRecord, cause: BaseException) -> bool:
        attempts = self._attempts.get(record.request_id, 0) + 1
        if attempts < self.max_attempts:
            self._attempts[record.request_id] = attempts
            return False
        self._attempts.pop(record.request_id, None)
        self._dead_letter(record, f"failed {attempts} times: {type(cause).__name__}: {cause}")
        return True

    def _dead_letter(self, record: UsageRecord, reason: str) -> None:
        if self.dead_letter is not None:
            log.error("usage record %s of team %s dead-lettered to %s: %s", record.request_id, record.team,
                      self.dead_letter.path, reason)
            self.dead_letter.add_record(record, reason)  # raising here keeps the batch (nothing lost)
        else:  # no file to keep it in: the log line carries the whole record
            log.error("usage record dead-lettered (%s): %s", reason, json.dumps(record.to_dict(), default=str))
        self.dead_lettered += 1
