"""uvicorn's record of a request cancelled at shutdown becomes one line; any other error keeps its traceback."""
from __future__ import annotations

import asyncio
import logging

from gateway.shutdown_log import ShutdownCancelFilter, quiet_shutdown_cancels


def _record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application\n", None,
                             (type(exc), exc, None))


def test_a_shutdown_cancel_is_one_line_and_other_errors_keep_their_traceback() -> None:
    cancelled = _record(asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded"))
    assert ShutdownCancelFilter().filter(cancelled)
    assert cancelled.exc_info is None and cancelled.levelno == logging.WARNING
    assert "timeout graceful shutdown exceeded" in cancelled.getMessage()
    assert "\n" not in logging.Formatter().format(cancelled)
    bug = _record(ValueError("a real fault"))
    assert ShutdownCancelFilter().filter(bug) and bug.exc_info is not None


def test_installed_once() -> None:
    logger = logging.getLogger("test-shutdown-log")
    quiet_shutdown_cancels(logger)
    quiet_shutdown_cancels(logger)
    assert sum(isinstance(f, ShutdownCancelFilter) for f in logger.filters) == 1
