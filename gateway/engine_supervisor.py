"""Runs the local engines a policy asks for (`kind: engine` without base_url) as child processes:
spawn on a free port, wait for /health, restart with backoff when one dies, stop them on shutdown."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from policies.schema import Policy

log = logging.getLogger("hybridgw.engines")


@dataclass(frozen=True)
class EngineSpec:
    name: str  # the backend's name in the policy
    model: str
    args: tuple[str, ...] = ()


@dataclass
class _Child:
    spec: EngineSpec
    port: int
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_path: Path | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def engines_to_spawn(policy: Policy) -> list[EngineSpec]:
    return [EngineSpec(name, spec.model or "smollm2", tuple(spec.engine_args))
            for name, spec in policy.backends.items() if spec.spawned]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the gateway dies without stopping it (no orphaned engines).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


class EngineSupervisor:
    def __init__(self, specs: list[EngineSpec], log_dir: Path, python: str = sys.executable,
                 max_backoff_s: float = 30.0) -> None:
        self._children = [_Child(spec, _free_port()) for spec in specs]
        self._log_dir = log_dir
        self._python = python
        self._max_backoff_s = max_backoff_s
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def urls(self) -> dict[str, str]:
        """Backend name → OpenAI base URL, for create_app(engine_urls=...)."""
        return {c.spec.name: f"{c.url}/v1" for c in self._children}

    def start(self, timeout_s: float = 600.0) -> dict[str, str]:
        """Spawn every engine and wait until each answers /health; then watch them in a thread."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        for child in self._children:
            self._spawn(child)
        deadline = time.monotonic() + timeout_s
        for child in self._children:
            self._wait_healthy(child, deadline)
        self._thread = threading.Thread(target=self._watch, name="engine-supervisor", daemon=True)
        self._thread.start()
        return self.urls()

    def _spawn(self, child: _Child) -> None:
        args = [self._python, "-m", "gateway.cli", "engine", "--model", child.spec.model,
                "--port", str(child.port), *child.spec.args]
        child.log_path = self._log_dir / f"engine-{child.spec.name}.log"
        with open(child.log_path, "ab") as out:
            child.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, preexec_fn=die_with_parent)
        child.started_at = time.monotonic()
        log.info("engine %s: started pid %d on port %d (log %s)", child.spec.name, child.popen.pid, child.port,
                 child.log_path)

    def _wait_healthy(self, child: _Child, deadline: float) -> None:
        assert child.popen is not None
        while not _answers(f"{child.url}/health"):
            if child.popen.poll() is not None:
                tail = child.log_path.read_text(errors="replace")[-3000:] if child.log_path else ""
                raise RuntimeError(f"engine {child.spec.name} exited with {child.popen.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"engine {child.spec.name} did not answer /health in time")
            time.sleep(0.2)

    def _watch(self) -> None:
        while not self._stopping.wait(0.5):
            for child in self._children:
                with self._lock:
                    if self._stopping.is_set() or child.popen is None or child.popen.poll() is None:
                        continue
                    try:
                        self._restart_later(child)
                    except Exception:  # e.g. too many open files for its log: try again later, never die
                        child.restarts += 1
                        child.next_start = time.monotonic() + min(self._max_backoff_s, 2.0 ** child.restarts)
                        log.exception("engine %s: restart failed; trying again", child.spec.name)

    def _restart_later(self, child: _Child) -> None:
        now = time.monotonic()
        if child.next_start == 0.0:
            # A child that ran a good while before dying starts again from the shortest backoff.
            if now - child.started_at > 60:
                child.restarts = 0
            backoff = min(self._max_backoff_s, 2.0 ** child.restarts)
            child.next_start = now + backoff
            log.warning("engine %s exited with %s; restarting in %.0fs", child.spec.name,
                        child.popen.returncode if child.popen else None, backoff)
        elif now >= child.next_start:
            child.restarts += 1
            child.next_start = 0.0
            self._spawn(child)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            for child in self._children:
                if child.popen is not None and child.popen.poll() is None:
                    os.killpg(child.popen.pid, signal.SIGTERM)
            for child in self._children:
                if child.popen is None:
                    continue
                try:
                    child.popen.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(child.popen.pid, signal.SIGKILL)
                    child.popen.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)
