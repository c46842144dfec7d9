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
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        # uvicorn also answers http.disconnect once the response is complete: only a disconnect
        # while we are still working on the request counts.
        if not self._closed and self._task is not None:
            self.disconnected = True
            self._task.cancel()

    def close(self) -> None:
        """The response is (about to be) complete; stop watching."""
        self._closed = True
        self._watcher.cancel()

    def absorb(self) -> bool:
        """In an `except CancelledError`: True (and the cancel undone) if it came from a disconnect."""
        if not self.disconnected:
            return False
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True
