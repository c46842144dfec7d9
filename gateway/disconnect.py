"""Client went away → cancel what the request is waiting on (the upstream call or the relay), so
the upstream connection is closed instead of generating tokens for nobody."""
from __future__ import annotations

import asyncio

from starlette.types import Receive


class DisconnectGuard:
    """Watches `receive` for http.disconnect (start it only after the body has been read)."""

    __slots__ = ("_closed", "_task", "_watcher", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self.disconnected = False
        self._closed = False
        self._task: asyncio.Task[object] | None = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        # uvicorn also answers http.disconnect once the response is complete: only a disconnect
        # while we are still working on the request counts.
        if not self._closed and self._task is not None:
            self.disconnected = True
            self._task.cancel()

    def close(self) -> None:
        """The response is (about to be) complete; stop watching.

        The guard lets go of the watcher (and of the request's task) as it cancels it: the cancelled
        watcher keeps its CancelledError, whose traceback holds `_watch`'s frame and so this guard. Held
        here too, that is a reference cycle per request — with uvicorn's request cycle, scope and the
        request's task inside it — that only the cyclic GC frees; let go, reference counting frees it
        all when the watcher ends (tests/unit/gateway/test_disconnect_guard.py)."""
        self._closed = True
        watcher, self._watcher, self._task = self._watcher, None, None
        if watcher is not None:
            watcher.cancel()

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancel undone) if it came from a disconnect."""
        if not self.disconnected:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True
