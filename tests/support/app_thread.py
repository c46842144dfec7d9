"""A gateway app served by uvicorn in a thread of the test process (for tests that read its in-memory
parts: a list of usage records, spans, a recording scorer), and the list sink those tests hand it."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from observability.usage import UsageRecord
from tests.support import procs


class ListSink:
    """A usage sink that keeps every record it is given."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def submit(self, record: UsageRecord) -> None:
        self.records.append(record)


@contextmanager
def serving(app: Any) -> Iterator[tuple[str, threading.Thread]]:
    """(base URL, the server's thread) while `app` is served on a free port; stopped on exit."""
    port = procs.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    procs.wait_until(lambda: server.started or not thread.is_alive(), "the in-thread gateway", 30)
    assert server.started, "the in-thread gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}", thread
    finally:
        server.should_exit = True
        thread.join(timeout=10)
