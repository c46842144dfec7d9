"""One log line, not a traceback, for a request that shutdown's grace limit cancels: uvicorn reports the
cancellation the gateway re-raises (after writing the request's usage record, gateway/proxy.py) as
"Exception in ASGI application" with every frame from uvicorn to aiohttp. It is expected, not a fault."""
from __future__ import annotations

import asyncio
import logging

_UVICORN_MESSAGE = "Exception in ASGI application"
LINE = ("a request still running at shutdown's grace limit was cancelled (%s); its usage record says "
        "error_type=shutdown")


class ShutdownCancelFilter(logging.Filter):
    """Rewrites uvicorn's record of a cancelled request to LINE; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError) and str(record.msg).startswith(_UVICORN_MESSAGE):
            record.msg, record.args = LINE, (str(exc) or "cancelled",)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_shutdown_cancels(logger: logging.Logger) -> None:
    """Install the filter on uvicorn's error logger (once)."""
    if not any(isinstance(f, ShutdownCancelFilter) for f in logger.filters):
        logger.addFilter(ShutdownCancelFilter())
