"""Hot reload of the policy file: on a change of its mtime (checked every second) and on SIGHUP.
A file that does not load is refused with its errors logged; the running policy stays."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path

from policies.errors import PolicyError
from policies.loader import LoadedPolicy, load_policy_file

log = logging.getLogger("hybridgw.policy.reload")
Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): an edit within one mtime tick still shows


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PolicyReloader:
    """Calls `apply(loaded)` with each new valid version of `path` (e.g. PolicyRouter.reload)."""

    def __init__(self, path: str | Path, apply: Callable[[LoadedPolicy], None], *, interval_s: float = 1.0,
                 environ: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.apply = apply
        self.interval_s = interval_s
        self.environ = environ
        self.last_error: str | None = None
        self.reloads = 0  # successful reloads, for tests and /metrics
        self._stamp = _stamp(self.path)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def check(self, force: bool = False) -> bool:
        """Reload if the file changed (or `force`); True when a new policy was applied."""
        stamp = _stamp(self.path)
        if stamp is None:
            self._refuse(f"{self.path}: the policy file is gone; keeping the running policy")
            return False
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp  # a broken version is reported once, not every second
        try:
            loaded = load_policy_file(self.path, self.environ if self.environ is not None else os.environ)
        except PolicyError as exc:
            self._refuse(f"policy reload refused, keeping the running policy:\n{exc.message}")
            return False
        try:
            self.apply(loaded)
        except Exception as exc:  # whatever goes wrong, the running policy must stay in force
            self._refuse(f"policy reload failed while applying, keeping the running policy: {exc!r}")
            return False
        self.last_error = None
        self.reloads += 1
        log.info("policy reloaded from %s (%d rules)", self.path, len(loaded.policy.rules))
        return True

    def _refuse(self, message: str) -> None:
        if message != self.last_error:
            log.error(message)
        self.last_error = message

    async def start(self) -> None:
        """Watch the file from the running loop; SIGHUP forces a reload (where signals exist)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGHUP, self.check, True)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            log.info("SIGHUP reload unavailable here; watching the file only")
        self._task = asyncio.create_task(self._watch(), name="hybridgw-policy-reload")

    async def stop(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_signal_handler(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError, AttributeError):
                pass
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.check()
