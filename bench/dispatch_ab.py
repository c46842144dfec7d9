"""A/B of gateway/dispatch.py's complete() and open_stream() between another tree and this checkout, in one
process, interleaved: ns a call on uvloop against an in-process backend that yields to the loop once (no I/O),
so only dispatch's own work differs. Both trees' dispatch.py are loaded by path; the rest is this checkout's.

Run: .venv/bin/python -m bench.dispatch_ab --base /tmp/base [--calls 20000] [--rounds 15]
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import uvloop

from bench.run_report import load_average
from gateway.timing import RequestClock
from policies.decision import Target

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (Target("up", "m"),)


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _Observer:
    def started(self, target: Target) -> None: ...

    def failed(self, target: Target, error: Exception) -> None: ...

    def succeeded(self, target: Target) -> None: ...

    def abandoned(self) -> None: ...


class _Backend:
    async def complete(self, request: object) -> str:
        await asyncio.sleep(0)
        return "response"

    async def stream(self, request: object) -> AsyncIterator[bytes]:
        await asyncio.sleep(0)
        yield b"first"
        yield b"rest"


async def _per_call(module: ModuleType, calls: int, stream: bool) -> float:
    backends, observer = {"up": _Backend()}, _Observer()
    start = time.perf_counter()
    for _ in range(calls):
        if stream:
            opened = await module.open_stream(TARGETS, backends, lambda t: None, RequestClock(), observer)
            await opened.rest.aclose()
        else:
            await module.complete(TARGETS, backends, lambda t: None, RequestClock(), observer)
    return (time.perf_counter() - start) / calls * 1e9


async def _measure(trees: dict[str, ModuleType], calls: int, rounds: int) -> None:
    for stream in (False, True):
        ns: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(rounds):
            for name, module in trees.items():
                ns[name].append(await _per_call(module, calls, stream))
        base, new = (statistics.median(v) for v in ns.values())
        print(f"{'open_stream' if stream else 'complete'}: base {base:.0f} ns, this checkout {new:.0f} ns a call "
              f"(median of {rounds} rounds of {calls:,}): {new - base:+.0f} ns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other tree (its gateway/dispatch.py)")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    trees = {"base": _load("dispatch_base", args.base / "gateway" / "dispatch.py"),
             "new": _load("dispatch_new", ROOT / "gateway" / "dispatch.py")}
    print(f"load average at start: {load_average()}")
    uvloop.run(_measure(trees, args.calls, args.rounds))
    print(f"load average at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
