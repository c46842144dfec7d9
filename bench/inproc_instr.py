"""The event-loop thread's instructions per request with no server and no client in the process, counted by
callgrind: the real app (create_app, full path on as bench/hot_path_inproc.py: key auth, routing, rpm/tpm
limits and a USD budget, the SQLite ledger, the access line, OTLP spans at ratio 1) called by direct ASGI
messages, one request at a time, on uvloop; instrumentation is on for the counted requests only. No uvicorn
tick runs (bench/hot_path_instr.py's idle loop, 0.43 M instructions a second of wall time, which a loaded
box's slow valgrind runs inflate), so the count does not move with the box's load.

Run: .venv/bin/python -m bench.inproc_instr --tree base=/tmp/base --tree new=. [--requests 200] [--stream] [--threads]
(each tree in turn; --stream: 16-chunk streams from the fake upstream instead of non-streamed answers;
--threads: every thread's count too — the background threads' share follows the run's pace, see the docs)
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def inner(requests: int, stream: bool) -> None:
    """Inside valgrind, cwd = the tree: serve `requests` requests, instrumented."""
    import uvloop

    import bench.hot_path_inproc as hpi
    from bench.otlp_discard import start_discard
    from bench.stack import create_key, start_fake
    from bench.workers_throughput import POLICY
    from gateway.app import create_app
    from gateway.assembly import build_observability, open_key_store
    from gateway.serve_cli import start_logging
    from gateway.settings import Settings
    from policies.loader import load_policy_file
    from policies.offline import configure_offline_env
    from tests.support import procs

    if stream:
        hpi.BODY = hpi.BODY.replace(b'"max_tokens": 16', b'"max_tokens": 16, "stream": true, "user": "fake:chunks=16"')
    fake, port = start_fake()
    sink, otlp_url = start_discard()
    workdir = Path(tempfile.mkdtemp(prefix="inproc-instr-"))
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=port))
    env = {"HYBRIDGW_DATA_DIR": str(workdir / "data"), "REDIS_URL": "", "HYBRIDGW_TRACES": "otlp",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_url, "HYBRIDGW_TRACE_SAMPLE_RATIO": "1.0"}
    os.environ.update(env)
    configure_offline_env()
    key = create_key(config, env, cwd=Path.cwd())
    listener = start_logging("warning")
    settings = Settings.from_env(data_dir=workdir / "data", policy_file=config)
    loaded = load_policy_file(config)
    store = open_key_store(settings)
    obs = build_observability(settings, loaded.policy, os.environ, key_store=store)
    app = create_app(settings, policy=loaded, key_store=store, usage_sink=obs.ledger, limiter=obs.limiter,
                     tracer_provider=obs.tracing.provider, metrics=obs.metrics,
                     request_metrics=obs.request_metrics, usage_store=obs.ledger.store)

    def toggle(on: bool) -> None:
        subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True,
                       capture_output=True)

    async def run() -> None:
        async with app.router.lifespan_context(app):
            scope = hpi.scope_for(key)
            for _ in range(50):  # warm-up: connections, caches
                await hpi.one(app, scope)
            await asyncio.sleep(0.5)
            toggle(True)
            for _ in range(requests):
                await hpi.one(app, scope)
            toggle(False)

    try:
        uvloop.install()
        asyncio.run(run())
    finally:
        obs.close()
        store.close()
        listener.stop()
        sink.shutdown()
        procs.stop(fake)


def count(name: str, tree: Path, args: argparse.Namespace, workdir: Path) -> float:
    out = workdir / f"cg-{name}"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
           f"--callgrind-out-file={out}", sys.executable, __file__, "inner", str(args.requests)]  # by path: a base tree lacks it
    env = {**os.environ, "PYTHONPATH": f"{tree}:{ROOT}", "PYTHONHASHSEED": "0"}
    subprocess.run(cmd + (["stream"] if args.stream else []), cwd=tree, env=env, check=True, capture_output=True)
    files = sorted(f for f in workdir.glob(f"cg-{name}*") if re.search(r"-\d+$", f.name))
    per_thread = {f.name.rsplit("-", 1)[1]: _total(f) / args.requests for f in files}
    if args.threads:  # every thread's instructions while counted: the ledger, log and span-export threads too
        shown = ", ".join(f"{n}: {v / 1e3:.1f} k" for n, v in per_thread.items() if v >= 500)
        print(f"{name}: by thread (k instructions a request): {shown}; all threads {sum(per_thread.values()) / 1e3:.1f} k",
              flush=True)
    return per_thread["01"]  # the main thread: the loop


def _total(path: Path) -> int:
    text = subprocess.run(["callgrind_annotate", str(path)], capture_output=True, text=True, check=True).stdout
    found = re.search(r"^\s*([\d,]+).*PROGRAM TOTALS", text, re.M)
    return int(found.group(1).replace(",", "")) if found else 0  # a thread that ran nothing while counted


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "inner":
        inner(int(sys.argv[2]), len(sys.argv) > 3 and sys.argv[3] == "stream")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (default: this checkout)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--threads", action="store_true", help="also print every thread's count (which thread is "
                        "which: the callgrind files' thread numbers; the export and ledger threads batch by time)")
    args = parser.parse_args()
    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)] or [("this", ROOT)]
    workdir = Path(tempfile.mkdtemp(prefix="inproc-instr-"))
    for name, tree in trees:
        per = count(name, tree, args, workdir)
        kind = "16-chunk stream" if args.stream else "non-streamed request"
        print(f"{name}: {per / 1e3:.1f} k instructions per {kind} on the loop thread (in-process, "
              f"{args.requests} requests)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
