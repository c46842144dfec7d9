"""`hybridgw serve [--config FILE] [--host H] [--port P] [--workers N]`: load the policy, make the first
key on a first start, start the local engines it needs, and run the gateway under uvicorn — in this
process (`--workers 1`), or in N worker processes under a supervisor (gateway/serve_supervisor.py)."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.app import create_app
from gateway.assembly import build_observability, open_key_store
from gateway.auth import new_key_refusal
from gateway.catalog import build_catalog
from gateway.data_dir import PRIVATE_UMASK, secure_data_dir
from gateway.engine_supervisor import EngineSupervisor, engines_to_spawn
from gateway.heap import prepare_heap_for_serving
from gateway.heap_trim import start_heap_trimmer
from gateway.key_store import KeyStorage, KeyStoreUnavailable
from gateway.log_thread import LogThread, start_log_thread
from gateway.settings import Settings, SettingsError, env_number
from gateway.startup_lines import backend_lines, console_line
from policies.errors import PolicyError
from policies.loader import LoadedPolicy, load_default_policy, load_policy_file
from policies.schema import Policy


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw serve", description="Run the hybridgw gateway.")
    parser.add_argument("--config", type=Path, help="policy file (default: $HYBRIDGW_POLICY, else the embedded default policy)")
    parser.add_argument("--host", default=None, help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default 8000")
    parser.add_argument("--data-dir", type=Path, help="default: $HYBRIDGW_DATA_DIR or ~/.hybridgw")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--engine-timeout", type=float, default=600.0, help="seconds to wait for engines")
    parser.add_argument("--workers", type=int, default=None,
                        help="gateway processes on the port (default: $HYBRIDGW_WORKERS, else the machine's cores)")
    return parser


def worker_count(requested: int | None, environ: Mapping[str, str]) -> int:
    """--workers, else $HYBRIDGW_WORKERS, else one per core."""
    if requested is None:
        requested = env_number(environ, "HYBRIDGW_WORKERS", int)
    return max(1, requested if requested is not None else (os.cpu_count() or 1))


def serve_app(app: Any, settings: Settings, sock: socket.socket | None = None) -> None:
    """Run `app` under uvicorn (httptools behind the connection guard, uvloop) on host:port, or on
    `sock`, a listening socket shared with the other workers."""
    import uvicorn

    from gateway.http_guard import ConnectionBounds, connection_limit, guarded_protocol
    from gateway.shutdown_log import quiet_shutdown_cancels

    total = connection_limit(settings.max_connections)
    bounds = ConnectionBounds(settings.header_timeout_s, settings.max_connections_per_client, total,
                              settings.max_header_bytes)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                            http=guarded_protocol(bounds), limit_concurrency=total, log_level="warning",
                            access_log=False, lifespan="on", timeout_graceful_shutdown=10)
    quiet_shutdown_cancels(logging.getLogger("uvicorn.error"))  # after Config: it sets uvicorn's logging up
    server = uvicorn.Server(config)
    prepare_heap_for_serving()  # the app is built: GCs walk only what requests allocate (gateway/heap.py)
    inner = app if hasattr(app, "state") else getattr(app, "app", None)  # under serve_worker's WorkerHeader
    readiness = getattr(getattr(inner, "state", None), "readiness", None)
    ledger = getattr(readiness, "ledger", None)  # a trim once the usage store is back and the spill replayed
    trimmer = start_heap_trimmer(settings.heap_trim_s, busy=None if ledger is None else lambda: _in_outage(ledger))  # gateway/heap_trim.py
    if readiness is not None:
        readiness.heap_trimmer = trimmer
    server.run(sockets=None if sock is None else [sock])
    if trimmer is not None:
        trimmer.stop()
    if not server.started:  # e.g. the port is in use: exit 3 as uvicorn.run does, not 0
        raise SystemExit(3)


def _in_outage(ledger: Any) -> bool:
    """The usage store down, or records still in the spill (the heap trimmer trims once when this ends)."""
    health = ledger.health()
    return health.store_down or health.spill_pending


def start_logging(level: str) -> LogThread:
    """Log lines (one JSON access line per request among them) leave the event loop through a queue
    and are written by one thread (gateway/log_thread.py)."""
    return start_log_thread(logging.getLogger("hybridgw"), level, sys.stderr)


def _first_key(store: KeyStorage, base_url: str, policy: Policy) -> None:
    """First start with no keys at all: make one for team `default` and show it once (when the
    policy serves that team; the embedded default policy does)."""
    try:
        if store.count():
            return
        if new_key_refusal("default", policy) is not None:
            print("hybridgw: no API keys yet, and the policy has no team `default` for a first one; make "
                  "one with `hybridgw keys --config FILE create --team T`", file=sys.stderr, flush=True)
            return
        key, info = store.create("default", name="first-start")
    except KeyStoreUnavailable as exc:
        print(f"hybridgw: no first-start key: {exc}", file=sys.stderr, flush=True)
        return
    print(f"hybridgw: created an API key for team 'default' (id {info.key_id}); it is shown only now:\n"
          f"\n    {key}\n\n"
          f"    from openai import OpenAI\n"
          f"    client = OpenAI(base_url=\"{base_url}\", api_key=\"{key}\")\n", flush=True)


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM leave through `main`'s `finally` (ledger flushed, spans exported, engines
    stopped). uvicorn handles it while serving and then raises it again; with the default handler
    that second one killed the process before any of that ran, losing queued usage records."""
    def leave(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # already on the way out: let the flush finish
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, leave)


def _load(config: Path | None) -> LoadedPolicy:
    return load_default_policy() if config is None else load_policy_file(config)


def ignore_sighup_without_file(settings: Settings) -> None:
    """SIGHUP reloads a policy file; without one it must not kill the process."""
    if settings.policy_file is None:
        signal.signal(signal.SIGHUP, lambda *_: logging.getLogger("hybridgw.policy.reload").warning(
            "SIGHUP: serving the embedded default policy; there is no policy file to reload"))


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(host=args.host, port=args.port, policy_file=args.config,
                                     data_dir=args.data_dir)
        workers = worker_count(args.workers, os.environ)
        loaded = _load(settings.policy_file)
    except PolicyError as exc:
        print(f"hybridgw serve: {exc}", file=sys.stderr)
        return 2
    except SettingsError as exc:  # a malformed number in the environment
        print(f"hybridgw serve: {exc}", file=sys.stderr)
        return 1
    exit_cleanly_on_sigterm()
    os.umask(PRIVATE_UMASK)  # key and ledger files this process (and its engines) create: owner-only
    try:
        secure_data_dir(settings.data_dir)
    except OSError as exc:  # a file there, a read-only or unreachable place
        print(f"hybridgw serve: cannot use the data dir {settings.data_dir}: {exc}", file=sys.stderr)
        return 1
    listener = start_logging(args.log_level)
    try:  # before anything slow or printed: a port in use fails at once, as with N workers
        sock = _claim_port(settings) if workers == 1 else None
    except OSError as exc:
        print(f"hybridgw serve: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        listener.stop()
        return 1
    store = open_key_store(settings)
    _first_key(store, f"http://{settings.host}:{settings.port}/v1", loaded.policy)
    try:
        if sock is not None:
            return _serve_here(settings, loaded, store, args.engine_timeout, sock)
        from gateway.serve_supervisor import supervise

        return supervise(settings, loaded, workers, args.log_level, args.engine_timeout)
    finally:
        store.close()
        listener.stop()


def _claim_port(settings: Settings) -> socket.socket:
    """`--workers 1`: host:port bound (not SO_REUSEPORT: never shared with another server), for uvicorn."""
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a last run's TIME_WAIT is fine
    try:
        sock.bind((settings.host, settings.port))
    except OSError:
        sock.close()
        raise
    return sock


def _serve_here(settings: Settings, loaded: LoadedPolicy, store: KeyStorage, engine_timeout: float,
                sock: socket.socket) -> int:
    """`--workers 1`: engines, ledger, limiter and the app all in this process, on `sock`."""
    obs = build_observability(settings, loaded.policy, os.environ, key_store=store)
    supervisor = EngineSupervisor(engines_to_spawn(loaded.policy), settings.data_dir / "logs")
    try:
        engine_urls = supervisor.start(timeout_s=engine_timeout)
        app = create_app(settings, policy=loaded, key_store=store, usage_sink=obs.ledger, limiter=obs.limiter,
                         tracer_provider=obs.tracing.provider, metrics=obs.metrics,
                         request_metrics=obs.request_metrics, usage_store=obs.ledger.store,
                         engine_urls=engine_urls)
        ignore_sighup_without_file(settings)
        print("\n".join(backend_lines(loaded, build_catalog(loaded.policy, os.environ, engine_urls))),
              flush=True)
        print(f"hybridgw: serving on http://{settings.host}:{settings.port}/v1", flush=True)
        print(console_line(settings), flush=True)
        serve_app(app, settings, sock)
    finally:
        sock.close()
        supervisor.stop()
        obs.close()
    return 0
