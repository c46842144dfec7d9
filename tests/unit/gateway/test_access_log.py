"""The access line: built on the log thread from what the loop handed over (the same JSON as before),
and the log thread writes every line that waited in one write."""
from __future__ import annotations

import io
import json
import logging
import queue

from gateway.access_log import AccessRecord, access_line, log_access
from gateway.dispatch import Attempt
from gateway.log_thread import LazyQueueHandler, LogThread, start_log_thread
from observability.usage import EngineView
from policies.decision import Target
from tests.support.procs import wait_until
from tests.unit.observability.conftest import record


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        self.writes += 1
        self.sizes.append(len(text.encode()))
        return super().write(text)


def queued_logger(name: str, stream: io.StringIO, **writer_kw: float) -> tuple[logging.Logger, LogThread]:
    """A logger whose records queue for a LogThread writing to `stream` (not started), as the gateway wires them;
    a warning or above wakes the writer."""
    logger = logging.getLogger(name)
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    writer = LogThread(records, stream, logging.Formatter("%(message)s"), **writer_kw)
    logger.handlers[:] = [LazyQueueHandler(records, writer.wake)]  # type: ignore[arg-type]
    logger.setLevel("INFO")
    logger.propagate = False
    return logger, writer


def test_the_loop_enqueues_the_parts_and_the_writer_makes_the_line() -> None:
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    logger = logging.getLogger("test.access.enqueue")
    logger.handlers[:] = [LazyQueueHandler(records)]
    logger.setLevel("INFO")
    logger.propagate = False
    usage = record(status="error", itl_gaps_s=(0.1, 0.2), engine_view={"local": EngineView(0.2, 1, 2, 90, 3, 70, -0.1)})
    log_access(logger, usage, "upstream said no", (Attempt(Target("flaky", "m"), "flaky is down"),))
    queued = records.get_nowait()
    assert isinstance(queued, AccessRecord) and queued.msg == ""  # nothing formatted on the caller's thread
    line = json.loads(logging.Formatter("%(message)s").format(queued))
    want = {**usage.to_dict(), "error": "upstream said no", "skipped": [{"backend": "flaky", "error": "flaky is down"}]}
    del want["itl_gaps_s"], want["engine_view"]  # the ledger keeps them; the line stays short
    assert line == json.loads(json.dumps(want)) and "engine_view" not in line


def test_lines_that_waited_leave_in_one_write_in_order() -> None:
    stream = CountingStream()
    logger, writer = queued_logger("test.access.batch", stream)
    usages = [record() for _ in range(3)]
    for usage in usages:
        log_access(logger, usage, "", ())
    logger.warning("a plain line")
    writer.start()  # everything above is already queued
    writer.stop()
    lines = stream.getvalue().split("\n")[:-1]
    assert [json.loads(x)["request_id"] for x in lines[:3]] == [u.request_id for u in usages]
    assert lines[3] == "a plain line" and stream.writes == 1


def test_start_log_thread_writes_until_stopped() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test.access.start")
    writer = start_log_thread(logger, "info", stream)
    log_access(logger.getChild("access"), record(request_id="r-1"), "", ())
    logger.getChild("x").debug("below the level")
    writer.stop()
    assert [json.loads(x)["request_id"] for x in stream.getvalue().split("\n")[:-1]] == ["r-1"]


def test_a_warning_is_written_at_once_not_at_the_next_poll() -> None:
    stream = io.StringIO()
    logger, writer = queued_logger("test.access.urgent", stream, interval_s=3600.0)  # no poll comes
    writer.start()
    try:
        log_access(logger, record(request_id="r-2"), "", ())  # waits for a poll...
        logger.error("engine died")  # ...until this wakes the writer, which writes both
        lines = wait_until(lambda: (got := stream.getvalue().split("\n")[:-1]) and len(got) == 2 and got,
                           "the error line", wait_s=10)
        assert json.loads(lines[0])["request_id"] == "r-2" and lines[1] == "engine died"
    finally:
        writer.stop()


def test_a_large_batch_goes_out_in_atomic_writes_of_whole_lines() -> None:
    """The workers of `serve --workers N` share stderr: a write over PIPE_BUF (4 KiB) to a pipe may be torn
    by another worker's, so a batch is written in pieces of whole lines of at most 4 KiB (it was one write)."""
    stream = CountingStream()
    logger, writer = queued_logger("test.access.atomic", stream)
    usages = [record(request_id=f"r-{i}", team="équipe") for i in range(60)]  # ~60 × 500 bytes, not all ASCII
    for usage in usages:
        log_access(logger, usage, "", ())
    logger.info("x" * 5000)  # longer than a piece: alone
    writer.start()
    writer.stop()
    assert 1 < stream.writes < len(usages)  # batched still, but not in one write
    text = stream.getvalue()
    pieces, at = [], 0
    for size in stream.sizes:
        piece = text.encode()[at:at + size].decode()
        pieces.append(piece)
        at += size
    assert all(p.endswith("\n") for p in pieces)  # every write ends a line: none is split between two
    assert all(size <= 4096 for p, size in zip(pieces, stream.sizes) if p != "x" * 5000 + "\n")
    lines = text.split("\n")[:-1]
    assert [json.loads(x)["request_id"] for x in lines[:-1]] == [u.request_id for u in usages] and lines[-1] == "x" * 5000


def test_a_formatter_of_its_own_still_formats_access_lines() -> None:
    stream = io.StringIO()
    records: queue.SimpleQueue[object] = queue.SimpleQueue()
    writer = LogThread(records, stream, logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("test.access.formatted")
    logger.handlers[:] = [LazyQueueHandler(records, writer.wake)]
    logger.setLevel("INFO")
    logger.propagate = False
    log_access(logger, record(request_id="r-2"), "", ())
    writer.start()
    writer.stop()
    level, name, line = stream.getvalue().rstrip("\n").split(" ", 2)
    assert (level, name, json.loads(line)["request_id"]) == ("INFO", "test.access.formatted", "r-2")


def test_the_line_is_the_records_fields_even_after_the_ledger_read_its_rollup_fields() -> None:
    """The ledger's thread may compute UsageRecord.rollup_fields (a cached property, kept in the record's
    __dict__) before the log thread makes the line: the line holds the record's fields, never that cache."""
    usage = record(status="ok")
    assert usage.rollup_fields  # what the poison check does first, on the ledger's thread
    line = json.loads(access_line(usage, "", ()))
    want = usage.to_dict()
    del want["itl_gaps_s"], want["engine_view"]
    assert line == json.loads(json.dumps(want)) and "rollup_fields" not in line
