"""Where the replay's routing parts from the real gateway's, request by request, on a kept
`bench/replay_vs_real.py --keep DIR` run whose ledger records the gateway's view (EngineView per request).

Two replays of the run's window with the model given (default: the run's own calibrated model):
- forced: every request goes where the real gateway sent it (both engines see the same history); at each
  request the replay's gateway still decides on its own view, and that choice is compared with the real one;
- own: the replay routes on its own (what `hybridgw replay` predicts).
Each disagreement is classified by what differed (see classify()), and the views are summarised.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_decisions.py /tmp/rv_a [--perf-model M] [--poll-clock[=recorded]]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.replay_engine_state import recorded_burst
from observability.usage import EngineView
from policies.estimator import litellm_price_table
from policies.perf_model_file import read_perf_model_file
from policies.replay.engine_args import with_burst
from policies.replay.inputs import read_policy
from policies.replay.outcome import percentile
from policies.replay.simulator import ReplaySetup
from policies.replay.traffic import TrafficRecord, read_ledger
from policies.replay.view_check import ViewCheck, replay_checked

ENGINE = "local"


def classify(real: str, on_recorded: str, rec: EngineView | None, rep: EngineView | None,
             fresh_waiting: int | None, limit: int) -> str:
    """Why the replay chose otherwise than the gateway (`real`), for kv_fit's queue limit `limit`:
    - "no recorded view": the ledger predates the field;
    - "not the view": decide() on the recorded view does not give what the gateway did (a refusal at
      dispatch sent it on, or other facts: the cost estimate, the output estimate);
    - "other fact": both views estimated the same queue (free KV, say);
    - "stale state": the real snapshot polled nearest to the request's arrival (another request's view)
      is on the replay's side of the limit: a fresh view would have decided as the replay did;
    - "different queue": otherwise (the simulated engine's queue is not the real one's)."""
    if rec is None:
        return "no recorded view"
    if on_recorded != real:
        return "not the view"
    if rep is not None and rec.queued == rep.queued:
        return "other fact"
    if rep is not None and rep.queued is not None and fresh_waiting is not None \
            and (fresh_waiting > limit) == (rep.queued > limit):
        return "stale state"
    return "different queue"


def fresh_waiting(traffic: list[TrafficRecord]) -> list[int | None]:
    """Per request, the engine's queue in the real snapshot polled nearest to its arrival (from every
    request's recorded view: each names its snapshot's age at routing, so its poll time ≈ arrival − age)."""
    polls = sorted({(round(r.time - v.age_s, 3), v.waiting) for r in traffic if r.recorded is not None
                    and (v := r.recorded.view.get(ENGINE)) is not None})
    times = [t for t, _ in polls]
    out: list[int | None] = []
    for r in traffic:
        k = bisect.bisect_left(times, r.time)
        near = [j for j in (k - 1, k) if 0 <= j < len(polls)]
        out.append(polls[min(near, key=lambda j: abs(times[j] - r.time))][1] if near else None)
    return out


def _q(values: list[float], q: float) -> str:
    v = percentile(sorted(values), q)
    return "-" if v is None else f"{v:.3g}"


def summarise(traffic: list[TrafficRecord], check: ViewCheck, limit: int) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    directions: Counter[str] = Counter()
    rec_q, rep_q, rec_age, rep_age, rec_w, rep_w = [], [], [], [], [], []
    fresh = fresh_waiting(traffic)
    for i, r in enumerate(traffic):
        if r.recorded is None or r.recorded.status != "ok":
            continue
        rec, rep = r.recorded.view.get(ENGINE), check.views[i].get(ENGINE)
        for seen, q, age, w in ((rec, rec_q, rec_age, rec_w), (rep, rep_q, rep_age, rep_w)):
            if seen is not None:
                age.append(seen.age_s)
                w.append(seen.waiting)
                if seen.queued is not None:
                    q.append(seen.queued)
        real, chosen = r.recorded.backend, check.chosen[i]
        if real == chosen:
            kinds["agree"] += 1
            continue
        kinds[classify(real, check.on_recorded[i], rec, rep, fresh[i], limit)] += 1
        directions[f"real {real or '-'} / replay {chosen or '-'}"] += 1
    served = [b for b in check.outcomes.backend if b]
    return {"requests": sum(kinds.values()), "decisions": dict(kinds), "directions": dict(directions),
            "replay local share": sum(b == ENGINE for b in served) / max(1, len(check.outcomes.backend)),
            "view": {"real queued p50/p95/max": [_q(rec_q, 50), _q(rec_q, 95), max(rec_q, default=None)],
                     "replay queued p50/p95/max": [_q(rep_q, 50), _q(rep_q, 95), max(rep_q, default=None)],
                     "real polled waiting p50/p95": [_q(rec_w, 50), _q(rec_w, 95)],
                     "replay polled waiting p50/p95": [_q(rep_w, 50), _q(rep_w, 95)],
                     "real age s p50/p95": [_q(rec_age, 50), _q(rec_age, 95)],
                     "replay age s p50/p95": [_q(rep_age, 50), _q(rep_age, 95)]}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a kept replay_vs_real run")
    p.add_argument("--perf-model", type=Path, help="default: the run's calibrated-model.json")
    p.add_argument("--poll-clock", nargs="?", const="period", default="",
                   help="the replay's gateway polls on a clock (replay --poll-clock[=recorded])")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "x")
    window = json.loads((a.run / "window.json").read_text())
    traffic = read_ledger(a.run / "gateway" / "usage.sqlite3", window["since"], window["until"])
    loaded = read_policy(a.run / "policy.yaml", [])
    perf = read_perf_model_file(a.perf_model or a.run / "calibrated-model.json")
    perf = with_burst(perf, recorded_burst(a.run), [ENGINE])  # the window engine's burst (older runs: 0)
    setup = ReplaySetup(perf, litellm_price_table(), 0, poll_clock=a.poll_clock)
    poll_s = loaded.policy.health.poll_interval_s
    limit = loaded.policy.backends[ENGINE].max_waiting
    measured = sum(r.recorded is not None and r.recorded.backend == ENGINE for r in traffic) / len(traffic)
    result = {"run": str(a.run), "measured local share": measured, "poll_interval_s": poll_s}
    for mode in ("forced", "own"):
        result[mode] = summarise(traffic, replay_checked(loaded, traffic, setup, forced=mode == "forced"), limit)
    print(json.dumps(result, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
