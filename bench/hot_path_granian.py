"""`hybridgw serve` with granian (Rust HTTP server, embedded on our uvloop) in place of uvicorn, for
measuring the two side by side (bench/hot_path.py --server granian): everything but the server is
`gateway.cli serve`'s own. granian is not a dependency: install it apart and put it on PYTHONPATH
(`pip install --target DIR granian`, then GRANIAN_PATH=DIR for bench/hot_path.py). What it lacks against uvicorn here: the connection
guard (gateway/http_guard.py: per-address caps, head size), so it is a measurement, not a server choice.

Run: PYTHONPATH=DIR:$PWD python -m bench.hot_path_granian serve --config … [--task-impl rust]
"""
from __future__ import annotations

import os
import sys
from typing import Any

import uvloop


def serve_granian(app: Any, settings: Any, sock: Any = None) -> None:
    """serve_cli.serve_app's place: the app under granian's embedded ASGI server on host:port."""
    from granian.constants import Interfaces, TaskImpl
    from granian.server.embed import Server

    from gateway.heap import prepare_heap_for_serving

    task_impl = TaskImpl(os.environ.get("GRANIAN_TASK_IMPL", "asyncio"))
    server = Server(app, address=settings.host, port=settings.port, interface=Interfaces.ASGI,
                    log_access=False, log_level="warning", backlog=2048, task_impl=task_impl)
    prepare_heap_for_serving()
    uvloop.run(server.serve())


def main() -> None:
    args = sys.argv[1:]
    if "--task-impl" in args:  # ours, not serve's
        i = args.index("--task-impl")
        os.environ["GRANIAN_TASK_IMPL"] = args[i + 1]
        del args[i:i + 2]
    from gateway import cli, serve_cli

    serve_cli.serve_app = serve_granian  # the one line that differs from `hybridgw serve`
    sys.exit(cli.main(args))


if __name__ == "__main__":
    main()
