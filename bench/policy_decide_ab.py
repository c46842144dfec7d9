"""Before/after for bench/policy_decide.py: this checkout's bench script run against two source trees
(e.g. `git archive BASE | tar -x -C /tmp/base`), one process each, alternating tree by tree so that
both see the same load; per row the median of the runs' p50s and after ÷ before.

    .venv/bin/python bench/policy_decide_ab.py /tmp/base . [--pairs 3] [--iterations 800]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "policy_decide.py"


def run_once(tree: Path, iterations: int) -> dict[str, float]:
    """One bench process importing `tree`'s code: row → p50 µs."""
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    out = subprocess.run([sys.executable, str(BENCH), "--iterations", str(iterations), "--no-peer"],
                         env=env, capture_output=True, text=True, check=True, cwd=tree).stdout
    rows = {}
    for line in out.splitlines():  # the table: the step in 58 columns, then p50 and p99
        figures = line[58:].split()
        if len(figures) == 2 and all(f.replace(".", "", 1).isdigit() for f in figures):
            rows[line[:58].rstrip()] = float(figures[0])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=800)
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for _ in range(args.pairs):
        runs["before"].append(run_once(args.before, args.iterations))
        runs["after"].append(run_once(args.after, args.iterations))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    names = list(runs["after"][0])
    print(f"\n{'step':<58} {'before':>8} {'after':>8} {'after/before':>13}   (median p50 µs of {args.pairs} runs each)")
    for name in names:
        before = [r[name] for r in runs["before"] if name in r]
        after = statistics.median(r[name] for r in runs["after"])
        if before:
            b = statistics.median(before)
            print(f"{name:<58} {b:>8.1f} {after:>8.1f} {after / b:>13.2f}")
        else:
            print(f"{name:<58} {'-':>8} {after:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
