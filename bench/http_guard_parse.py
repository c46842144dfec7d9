"""What the connection guard (gateway/http_guard.py) adds to parsing one request head: a typical OpenAI
SDK chat head (18 headers) fed to the protocol's data_received by hand, no socket, the guarded protocol
vs uvicorn's own (and, with --rev, the guard as it was at git revisions), interleaved rounds, medians.

Run: .venv/bin/python -m bench.http_guard_parse [--heads 3000] [--rounds 5] [--rev 5e16ca8 …]
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from gateway import http_guard
from tests.support.fake_transport import FakeTransport

HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAccept-Encoding: gzip, deflate\r\n"
        b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
        b"User-Agent: OpenAI/Python 1.99.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.99.0\r\n"
        b"X-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\n"
        b"X-Stainless-Runtime-Version: 3.11.9\r\nAuthorization: Bearer sk-hgw-0123abcd-xxxxxxxxxxxxxxxxxxxxxxxx\r\n"
        b"X-Stainless-Async: false\r\nx-stainless-retry-count: 0\r\nx-stainless-read-timeout: 600\r\n"
        b"Content-Length: 0\r\n\r\n")


async def _app(scope: Any, receive: Any, send: Any) -> None:
    pass


def _module_at(rev: str) -> Any:
    """gateway/http_guard.py as it was at `rev`, imported under another name."""
    source = subprocess.run(["git", "show", f"{rev}:gateway/http_guard.py"], capture_output=True, text=True,
                            check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"http_guard_{rev}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _median_us(cls: Any, config: uvicorn.Config, heads: int) -> float:
    state, times = ServerState(), []
    for _ in range(heads):
        protocol = cls(config=config, server_state=state, app_state={})
        protocol.connection_made(FakeTransport())
        start = time.perf_counter()
        protocol.data_received(HEAD)
        times.append(time.perf_counter() - start)
        protocol.connection_lost(None)
    return statistics.median(times) * 1e6


async def main(heads: int, rounds: int, revs: list[str]) -> None:
    config = uvicorn.Config(_app, http="httptools", lifespan="off", log_level="error")
    config.load()
    guarded = http_guard.guarded_protocol(http_guard.ConnectionBounds(10, 0, 10**6))
    uvicorn_own = next(c for c in guarded.__mro__ if c.__module__.startswith("uvicorn."))
    trees = {"uvicorn": uvicorn_own, "guard (this tree)": guarded}
    for rev in revs:
        old = _module_at(rev)
        trees[f"guard @{rev}"] = old.guarded_protocol(old.ConnectionBounds(10, 0, 10**6))
    runs: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, cls in trees.items():
            runs[name].append(_median_us(cls, config, heads))
            await asyncio.sleep(0)
    for name, values in runs.items():
        print(f"{name:22} median {statistics.median(values):6.2f} µs per head  (rounds: "
              + " ".join(f"{v:.2f}" for v in values) + ")")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rev", action="append", default=[], help="also the guard at this git revision")
    args = parser.parse_args()
    asyncio.run(main(args.heads, args.rounds, args.rev))
