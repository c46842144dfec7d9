"""In-sample: each kept run replayed with the model `replay --calibrate` fits to its own ledger, the issue's four
figures off by (TTFT p50 / p95 by the gateway's ledger, local share, total cost), and where they part from the
recording: TTFT by backend measured and replayed, the local TTFT with the recorded routing forced (the engine
model alone, no routing difference), and the routing decisions that differ. No process is started.
The engine's burst budget: what the run's perf.json names (bench/replay_vs_real.py writes it since
2026-12-02), else 0 (the run predates it); --burst-batched-tokens N replays every run with N instead.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_insample.py /tmp/ho_rv_{h,i,j} [--json FILE]
        [--burst-batched-tokens N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replay_cross import cpu_share
from bench.replay_engine_state import recorded_burst
from bench.replay_grid import BARS, _replay, offs
from policies.estimator import litellm_price_table
from policies.perf_model_file import read_perf_model_file, with_overrides
from policies.replay.engine_args import with_burst
from policies.replay.inputs import read_policy
from policies.replay.outcome import percentile
from policies.replay.recording_fit import calibrated
from policies.replay.simulator import ReplaySetup
from policies.replay.traffic import read_ledger
from policies.replay.view_check import replay_checked


def _ttfts(backends: list[str], ttfts: list[float | None], which: str) -> list[float]:
    return sorted(t for b, t in zip(backends, ttfts) if b == which and t is not None)


def _pq(values: list[float]) -> str:
    got = [percentile(values, q) for q in (50, 95)]
    return " / ".join("-" if v is None else f"{v:.3f}" for v in got)


def burst_of(run: Path, forced: int | None) -> int:
    """The burst budget the run's engine had: `forced`, else its perf.json's, else 0 (recorded before it)."""
    return forced if forced is not None else recorded_burst(run)


def breakdown(run: Path, poll_clock: str = "", burst: int = 0) -> dict[str, Any]:
    """The run's own model (fitted as `replay --calibrate` does) replayed routing on its own and forced to the
    recorded routing: TTFT by backend, and how many of the replay's own choices differ from the recording."""
    w = json.loads((run / "window.json").read_text())
    traffic = read_ledger(run / "gateway" / "usage.sqlite3", w["since"], w["until"])
    loaded = read_policy(run / "policy.yaml", [])
    engines = ["local"]
    base = with_overrides(read_perf_model_file(run / "perf.json"), loaded.perf_model)
    base = with_burst(base, burst, engines)
    hosted = [n for n in loaded.policy.backends if n not in engines]
    perf = calibrated(base, engines, hosted, traffic)
    setup = ReplaySetup(perf, litellm_price_table(), 0, poll_clock=poll_clock)
    rec_b = [r.recorded.backend if r.recorded and r.recorded.status == "ok" else "" for r in traffic]
    rec_t = [r.recorded.ttft_s if r.recorded else None for r in traffic]
    own = replay_checked(loaded, traffic, setup, forced=False)
    forced = replay_checked(loaded, traffic, setup, forced=True)
    e = perf.engine("local")
    return {
        "local TTFT measured": _pq(_ttfts(rec_b, rec_t, "local")),
        "local TTFT own": _pq(_ttfts(own.outcomes.backend, own.outcomes.ttft, "local")),
        "local TTFT forced": _pq(_ttfts(forced.outcomes.backend, forced.outcomes.ttft, "local")),
        "hosted TTFT measured": _pq(_ttfts(rec_b, rec_t, "openai")),
        "hosted TTFT own": _pq(_ttfts(own.outcomes.backend, own.outcomes.ttft, "openai")),
        "forced: replay chose otherwise": sum(c != b for c, b in zip(forced.chosen, rec_b) if b),
        # the simulated engine's busy seconds with the recorded routing ÷ the engine's own step seconds
        "forced busy / steps": round(forced.outcomes.engine_busy_s.get("local", 0.0) / w["engine_speed"]["step_wall_s"], 3)
        if (w.get("engine_speed") or {}).get("step_wall_s") else None,
        "model": {k: round(getattr(e, k) * 1e3, 2) for k in ("decode_fixed_s", "decode_per_seq_s", "prefill_fixed_s",
                                                          "prefill_per_token_s", "request_overhead_s",
                                                          "frontend_service_s")},
        "source": e.source,
    }


def main() -> int:
    os.environ.setdefault("OPENAI_API_KEY", "x")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="kept runs (bench/replay_vs_real.py --keep DIR)")
    p.add_argument("--json", type=Path)
    p.add_argument("--poll-clock", nargs="?", const="period", default="", help="replay --poll-clock[=recorded]")
    p.add_argument("--burst-batched-tokens", type=int,
                   help="every run's engine burst budget (default: its perf.json's, else 0)")
    a = p.parse_args()
    clock = (f"--poll-clock={a.poll_clock}",) if a.poll_clock else ()
    rows = []
    for run in a.runs:
        share, burst = cpu_share(run), burst_of(run, a.burst_batched_tokens)
        got = offs(run, _replay(run, "--perf-model", str(run / "perf.json"), "--calibrate", *clock,
                                "--burst-batched-tokens", str(burst),
                                *(("--engine-share", f"local={share}") if share else ())))
        met = [abs(x) <= b for x, b in zip(got, BARS)]
        rows.append({"run": run.name, "burst": burst, "offs": got, "met": met,
                     **breakdown(run, a.poll_clock, burst)})
        r = rows[-1]
        cells = " / ".join(f"{x:+.0f}" if i != 2 else f"{x:+.1f}" for i, x in enumerate(got))
        print(f"| {run.name} ({burst}) | {cells} | {'all four' if all(r['met']) else ''} | local {r['local TTFT measured']} → "
              f"{r['local TTFT own']} (forced {r['local TTFT forced']}) | hosted {r['hosted TTFT measured']} → "
              f"{r['hosted TTFT own']} | {r['forced: replay chose otherwise']} | {r['forced busy / steps']} |", flush=True)
    per = [sum(r["met"][i] for r in rows) for i in range(4)]
    print(f"\nmet p50 / p95 / share / cost: {' / '.join(map(str, per))} of {len(rows)}; "
          f"all four: {sum(all(r['met']) for r in rows)}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
