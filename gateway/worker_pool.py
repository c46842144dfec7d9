"""The worker processes of `hybridgw serve --workers N`: each runs gateway/serve_worker.py on the one
port (gateway/listen_sockets.py: the kernel hands each connection to one of them); a worker that
dies is started again (reported in the log and on /readyz), and all of them are stopped with
SIGTERM (then SIGKILL past a grace period) on shutdown."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.engine_supervisor import die_with_parent

log = logging.getLogger("hybridgw.workers")
QUICK_EXIT_S = 10.0  # a worker that dies sooner than this after its start is crash-looping: back off


def _in_worker_before_exec() -> None:
    """In the forked child, before exec: die with the supervisor, and ignore SIGHUP until the worker's
    policy watcher takes it over (SIG_IGN survives exec). A reload forwarded while a worker still starts
    would otherwise kill it (SIGHUP's default); it reads the policy file after this anyway."""
    die_with_parent()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@dataclass(frozen=True)
class WorkerPlan:
    """What every worker is started with (as JSON on its command line)."""

    count: int
    fd: int | None  # the listening socket, inherited (None: each worker listens on its own, SO_REUSEPORT)
    host: str
    port: int
    policy_file: str | None
    data_dir: str
    log_level: str
    engine_urls: dict[str, str]  # backend name → OpenAI base URL of the engines the supervisor runs
    control_socket: str  # the supervisor's unix socket: shared limiter counts and its status


@dataclass
class _Worker:
    index: int
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0  # deaths in a row soon after starting
    next_start: float = 0.0  # when a dead worker is started again


def restart_delay_s(quick_exits: int, max_backoff_s: float) -> float:
    """No wait for a worker that ran a while; doubling back-off for one that keeps dying at start."""
    return 0.0 if quick_exits == 0 else min(max_backoff_s, 0.5 * 2.0 ** (quick_exits - 1))


@dataclass
class WorkerPool:
    plan: WorkerPlan
    python: str = sys.executable
    max_backoff_s: float = 10.0
    restarts: int = 0  # workers started again after dying
    _workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False

    def start(self) -> None:
        self._workers = [_Worker(index) for index in range(self.plan.count)]
        for worker in self._workers:
            self._spawn(worker)

    def _spawn(self, worker: _Worker) -> None:
        # Started from the supervisor's main thread only: PR_SET_PDEATHSIG fires when the thread that
        # started the child ends, so a worker started from a short-lived thread would die with it.
        args = [self.python, "-m", "gateway.serve_worker", str(worker.index), json.dumps(asdict(self.plan))]
        worker.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, pass_fds=() if self.plan.fd is None else (self.plan.fd,),
                                        preexec_fn=_in_worker_before_exec)
        worker.started_at = time.monotonic()
        log.info("worker %d: started pid %d", worker.index, worker.popen.pid)

    def check(self) -> None:
        """Start again each worker that has died (after its back-off); call it now and then."""
        now = time.monotonic()
        for worker in self._workers:
            if self._stopping or worker.popen is None or worker.popen.poll() is None:
                continue
            if worker.next_start == 0.0:
                ran = now - worker.started_at
                worker.quick_exits = worker.quick_exits + 1 if ran < QUICK_EXIT_S else 0
                delay = restart_delay_s(worker.quick_exits, self.max_backoff_s)
                worker.next_start = now + delay
                log.warning("worker %d (pid %d) exited with %s after %.0f s; starting another in %.1f s",
                            worker.index, worker.popen.pid, worker.popen.returncode, ran, delay)
            if now >= worker.next_start:
                worker.next_start = 0.0
                self.restarts += 1
                self._spawn(worker)

    def signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.popen is not None and worker.popen.poll() is None:
                worker.popen.send_signal(signum)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every worker (each drains its requests and flushes its ledger), SIGKILL laggards."""
        self._stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            if worker.popen is None:
                continue
            try:
                worker.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d (pid %d) did not stop in time; killing it", worker.index, worker.popen.pid)
                worker.popen.kill()
                worker.popen.wait()

    def status(self) -> dict[str, Any]:
        """What /readyz shows of the workers."""
        alive = [w.popen.pid for w in self._workers if w.popen is not None and w.popen.poll() is None]
        return {"count": self.plan.count, "alive": len(alive), "restarts": self.restarts, "pids": alive,
                "supervisor_pid": os.getpid()}
