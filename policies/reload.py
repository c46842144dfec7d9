"""Hot reload of the policy file: on a change of its mtime (checked every second) and on SIGHUP.
The file is read, parsed and validated on a worker thread (a hostile file cannot stall requests); a
file that does not load is refused with its error kept for /readyz, and the running policy stays.
The watcher survives any error, backing off while it repeats."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from observability.task_status import TaskState, TaskStatus
from policies.errors import PolicyError
from policies.loader import LoadedPolicy, load_policy, read_policy_text

log = logging.getLogger("hybridgw.policy.reload")
Stamp = tuple[int, int, int]  # (mtime_ns, size, inode): an edit within one mtime tick still shows


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def policy_version(text: str) -> str:
    """A short content hash: the same file gives the same version on every replica."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass(frozen=True)
class ReloadState:
    """What /readyz shows of the policy: the version in force, reloads, the last refusal, the watcher."""

    source: str
    version: str | None  # of the policy in force (None: unknown, e.g. the file was unreadable at start)
    loaded_at: float  # unix seconds it came into force
    reloads: int
    last_error: str | None  # the last refused reload (None once a later one applied); may name teams
    last_error_at: float | None
    watcher: TaskState


class PolicyReloader:
    """Calls `apply(loaded)` with each new valid version of `path` (e.g. PolicyRouter.reload)."""

    def __init__(self, path: str | Path, apply: Callable[[LoadedPolicy], None], *, interval_s: float = 1.0,
                 environ: Mapping[str, str] | None = None, max_backoff_s: float = 30.0) -> None:
        self.path = Path(path)
        self.apply = apply
        self.interval_s = interval_s
        self.environ = environ
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.reloads = 0  # successful reloads, for tests and /metrics
        self.status = TaskStatus("policy_reload", base_s=interval_s, cap_s=max_backoff_s)
        self._stamp = _stamp(self.path)
        self.version = self._version_now()
        self.loaded_at = time.time()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._signalled: set[asyncio.Task[bool]] = set()

    def _version_now(self) -> str | None:
        try:
            return policy_version(read_policy_text(self.path))
        except PolicyError:
            return None

    def state(self) -> ReloadState:
        return ReloadState(str(self.path), self.version, self.loaded_at, self.reloads, self.last_error,
                           self.last_error_at, self.status.snapshot())

    def check(self, force: bool = False) -> bool:
        """Reload now on this thread if the file changed (or `force`); True when a new policy was applied."""
        if not self._changed(force):
            return False
        return self._apply(self._load())

    async def acheck(self, force: bool = False) -> bool:
        """check() with the reading and validating done on a worker thread; applied on the loop."""
        async with self._lock:
            if not self._changed(force):
                return False
            return self._apply(await asyncio.to_thread(self._load))

    def _changed(self, force: bool) -> bool:
        stamp = _stamp(self.path)
        if stamp is None:
            self._refuse(f"{self.path}: the policy file is gone; keeping the running policy")
            return False
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp  # a broken version is reported once, not every second
        return True

    def _load(self) -> tuple[LoadedPolicy, str] | None:
        """The new policy and its version, or None (refused, the reason recorded). Any thread."""
        try:
            text = read_policy_text(self.path)
            loaded = load_policy(text, str(self.path), self.environ if self.environ is not None else os.environ)
        except PolicyError as exc:
            self._refuse(f"policy reload refused, keeping the running policy:\n{exc.message}")
            return None
        except Exception as exc:  # noqa: BLE001 (whatever a hostile file causes is a refused reload)
            self._refuse(f"policy reload refused, keeping the running policy: {type(exc).__name__}: {exc}")
            return None
        return loaded, policy_version(text)

    def _apply(self, new: tuple[LoadedPolicy, str] | None) -> bool:
        if new is None:
            return False
        loaded, version = new
        try:
            self.apply(loaded)
        except Exception as exc:  # noqa: BLE001 (whatever goes wrong, the running policy must stay in force)
            self._refuse(f"policy reload failed while applying, keeping the running policy: {exc!r}")
            return False
        self.last_error = self.last_error_at = None
        self.reloads += 1
        self.version, self.loaded_at = version, time.time()
        log.info("policy reloaded from %s (version %s, %d rules)", self.path, version, len(loaded.policy.rules))
        return True

    def _refuse(self, message: str) -> None:
        if message != self.last_error:
            log.error(message)
            self.last_error_at = time.time()
        self.last_error = message

    async def start(self) -> None:
        """Watch the file from the running loop; SIGHUP forces a reload (where signals exist)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            log.info("SIGHUP reload unavailable here; watching the file only")
        self._task = asyncio.create_task(self._watch(), name="hybridgw-policy-reload")
        self.status.ok()

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(force=True))
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    async def stop(self) -> None:
        if self._loop is not None:
            try:
                self._loop.remove_signal_handler(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError, AttributeError):
                pass
        tasks = [t for t in (self._task, *self._signalled) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.status.stopped()

    async def _guarded(self, force: bool = False) -> float:
        """One check that cannot kill its caller; returns how long to wait before the next."""
        try:
            await self.acheck(force)
        except Exception as exc:  # the watcher must outlive any error; it reports it and backs off
            delay = self.status.failed(exc)
            log.exception("policy file watcher failed; retrying in %.1f s", delay)
            return max(self.interval_s, delay)
        self.status.ok()
        return self.interval_s

    async def _watch(self) -> None:
        delay = self.interval_s
        while True:
            await asyncio.sleep(delay)
            delay = await self._guarded()
