"""The supervisor of `hybridgw serve --workers N`: claims the port once, spawns the local
engines once, owns the embedded limiter's counts (no REDIS_URL; restored from the ledger) and serves
them and its status on a unix socket, runs N workers on the port, forwards SIGHUP (policy reload)
to them, restarts a worker that dies, and on SIGTERM/SIGINT stops workers, then engines."""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from gateway.catalog import build_catalog
from gateway.engine_supervisor import EngineSupervisor, engines_to_spawn
from gateway.listen_sockets import claim_port
from gateway.settings import Settings
from gateway.startup_lines import backend_lines, console_line
from gateway.worker_pool import WorkerPlan, WorkerPool
from observability.counts_server import CountsServer
from observability.limits_restore import current_windows
from observability.window_counts import WindowCounts
from observability.wiring import open_store
from policies.limits import limits_from_policy
from policies.loader import LoadedPolicy

log = logging.getLogger("hybridgw.workers")
CHECK_EVERY_S = 0.2  # how often dead workers are looked for


def restored_counts(settings: Settings, loaded: LoadedPolicy) -> WindowCounts:
    """The embedded limiter's windows as the ledger left them (a restart keeps a spent budget spent)."""
    counts = WindowCounts()
    store = open_store(None, settings.data_dir)
    try:
        windows, _ = current_windows(limits_from_policy(loaded.policy), store, time.time())
        counts.restore(windows)
    finally:
        store.close()
    return counts


async def _run(pool: WorkerPool, server: CountsServer) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, pool.signal_all, signal.SIGHUP)
    await server.start()
    pool.start()
    try:
        while not stop.is_set():
            pool.check()
            try:
                await asyncio.wait_for(stop.wait(), CHECK_EVERY_S)
            except TimeoutError:
                pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already on the way out: let the workers drain
        log.info("stopping %d workers", pool.plan.count)
        await loop.run_in_executor(None, pool.stop)  # the counts stay served while workers settle
        await server.aclose()


def supervise(settings: Settings, loaded: LoadedPolicy, workers: int, log_level: str,
              engine_timeout: float) -> int:
    try:
        sock, fd = claim_port(settings.host, settings.port)  # before anything slow: a port in use fails at once
    except OSError as exc:
        print(f"hybridgw serve: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    runtime = Path(tempfile.mkdtemp(prefix="hybridgw-"))  # 0700: only this user reaches the socket
    engines = EngineSupervisor(engines_to_spawn(loaded.policy), settings.data_dir / "logs")
    try:
        engine_urls = engines.start(timeout_s=engine_timeout)
        plan = WorkerPlan(workers, fd, settings.host, settings.port,
                          None if settings.policy_file is None else str(settings.policy_file),
                          str(settings.data_dir), log_level, engine_urls, str(runtime / "control.sock"))
        pool = WorkerPool(plan)
        counts = WindowCounts() if settings.redis_url else restored_counts(settings, loaded)
        server = CountsServer(counts, Path(plan.control_socket), status=pool.status)
        print("\n".join(backend_lines(loaded, build_catalog(loaded.policy, os.environ, engine_urls))),
              flush=True)
        print(f"hybridgw: serving on http://{settings.host}:{settings.port}/v1 with {workers} workers "
              f"(supervisor pid {os.getpid()})", flush=True)
        print(console_line(settings), flush=True)
        uvloop.run(_run(pool, server))  # the counts are served on the loop the workers use too
    finally:
        engines.stop()
        sock.close()
        shutil.rmtree(runtime, ignore_errors=True)
    return 0
