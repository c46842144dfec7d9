"""Before/after for bench/policy_decide.py in one process: this checkout's bench rows built twice, once
on each source tree's code (e.g. `git archive BASE | tar -x -C /tmp/base`), then each row timed on
one side then the other, round by round, so that both see the same load; per row the median of the rounds'
p50s and after ÷ before.

    .venv/bin/python bench/policy_decide_ab.py /tmp/base . [--rounds 5] [--iterations 500]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent / "policy_decide.py"
PACKAGES = ("policies", "observability", "gateway", "local_engine")  # what each tree brings its own of


def _load(tree: Path, tag: str) -> tuple[ModuleType, list[tuple[str, Callable[[], object]]]]:
    """The bench module and its rows on `tree`'s code. The rows' routers hold that code's objects,
    so they keep running it after the next tree's modules take the names over."""
    for name in [n for n in sys.modules if n.split(".")[0] in PACKAGES]:
        del sys.modules[name]
    sys.path.insert(0, str(tree.resolve()))
    try:
        spec = importlib.util.spec_from_file_location(f"policy_decide_{tag}", BENCH)
        assert spec is not None and spec.loader is not None
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        bench.configure_offline_env()
        rows = bench._rows(bench._body(), BENCH.parent.parent / "policies" / "examples", False)
    finally:
        sys.path.remove(str(tree.resolve()))
    return bench, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args(argv)
    sides = {"before": _load(args.before, "before"), "after": _load(args.after, "after")}
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    p50s: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for i, (name, _) in enumerate(sides["after"][1]):
            for side, (bench, rows) in sides.items():  # the same row on each side, back to back
                p50s.setdefault((side, name), []).append(bench._time(rows[i][1], args.iterations)[0])
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"\n{'step':<58} {'before':>8} {'after':>8} {'after/before':>13}   (median p50 µs of {args.rounds} rounds)")
    for name, _ in sides["after"][1]:
        after = statistics.median(p50s[("after", name)])
        before = p50s.get(("before", name))
        if before:
            b = statistics.median(before)
            print(f"{name:<58} {b:>8.1f} {after:>8.1f} {after / b:>13.2f}")
        else:
            print(f"{name:<58} {'-':>8} {after:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
