"""A kept run's local TTFT by the queue its request was routed on (the gateway ledger's view: the queue the
router estimated, 0-4+), measured and as the run's own `--calibrate` model replays it with the recorded
routing forced, each held share of held_fit tried alone: which part of the local TTFT the simulator over-
or under-counts (the idle constant, the slope per request queued). No process is started.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_queue_ttft.py /work/rec10/{r,s,p} [--shares 0,0.25,1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import policies.replay.held_fit as held_fit
from bench.replay_insample import burst_of
from policies.estimator import litellm_price_table
from policies.perf_model_file import read_perf_model_file, with_overrides
from policies.replay.engine_args import with_burst
from policies.replay.inputs import read_policy
from policies.replay.recording_fit import calibrated
from policies.replay.simulator import ReplaySetup
from policies.replay.traffic import read_ledger
from policies.replay.view_check import replay_checked


def by_queue(run: Path, shares: list[float]) -> list[str]:
    """Markdown rows: each recorded queue's local requests, their measured median TTFT and each share's."""
    w = json.loads((run / "window.json").read_text())
    traffic = read_ledger(run / "gateway" / "usage.sqlite3", w["since"], w["until"])
    loaded = read_policy(run / "policy.yaml", [])
    base = with_burst(with_overrides(read_perf_model_file(run / "perf.json"), loaded.perf_model), burst_of(run, None),
                      ["local"])
    hosted = [n for n in loaded.policy.backends if n != "local"]
    local = [i for i, r in enumerate(traffic) if r.recorded and r.recorded.backend == "local" and r.recorded.ttft_s]
    replayed, kept = {}, held_fit.HELD_SHARES
    try:
        for share in shares:
            held_fit.HELD_SHARES = (share,)  # this share alone (the fit's choice among them, as --calibrate makes it)
            perf = calibrated(base, ["local"], hosted, traffic)
            replayed[share] = replay_checked(loaded, traffic, ReplaySetup(perf, litellm_price_table(), 0), True).outcomes.ttft
    finally:
        held_fit.HELD_SHARES = kept
    groups: dict[int, list[int]] = {}
    for i in local:
        view = traffic[i].recorded.view.get("local")
        groups.setdefault(min(4, view.queued) if view and view.queued is not None else -1, []).append(i)
    rows = []
    for q, members in sorted(groups.items()):
        cells = " | ".join(f"{median(replayed[s][i] for i in members):.3f}" for s in shares)
        rows.append(f"| {run.name} | {q if q >= 0 else '?'}{'+' if q == 4 else ''} | {len(members)} | "
                    f"{median(traffic[i].recorded.ttft_s for i in members):.3f} | {cells} |")
    return rows


def main() -> int:
    os.environ.setdefault("OPENAI_API_KEY", "x")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="kept runs (bench/replay_vs_real.py --keep DIR)")
    p.add_argument("--shares", default="0,0.25,0.5,1", help="held shares to replay (comma-separated)")
    a = p.parse_args()
    shares = [float(s) for s in a.shares.split(",")]
    print("| run | queued | n | measured | " + " | ".join(f"held {s:g}" for s in shares) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(shares))
    for run in a.runs:
        print("\n".join(by_queue(run, shares)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
