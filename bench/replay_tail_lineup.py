"""A loaded run's local TTFTs measured against the replay's with the recorded routing forced (the engine model
alone), request by request: by arrival second (TTFT, the request's own decode step (E2E − TTFT) / (output − 1)),
the tail in those steps, first tokens out of arrival order, and the floor at an idle engine. No process started.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_tail_lineup.py /work/rec10/g /work/rec10/l
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

from bench.replay_insample import burst_of
from policies.estimator import litellm_price_table
from policies.perf_model_file import read_perf_model_file, with_overrides
from policies.replay.engine_args import with_burst
from policies.replay.inputs import read_policy
from policies.replay.recording_fit import calibrated
from policies.replay.simulator import ReplaySetup
from policies.replay.traffic import read_ledger
from policies.replay.view_check import replay_checked


def _step(e2e: float | None, ttft: float | None, output: int) -> float | None:
    return (e2e - ttft) / (output - 1) if output > 1 and e2e is not None and ttft is not None else None


def _med(values: list[float | None], scale: float = 1.0) -> str:
    got = [v for v in values if v is not None]
    return f"{median(got) * scale:.2f}" if got else "-"


def _inversions(arrive: list[float], first: list[float]) -> float:
    """Share of pairs arriving within a second of each other whose first tokens came in the other order."""
    pairs = flips = 0
    for a in range(len(arrive)):
        for b in range(a + 1, len(arrive)):
            if abs(arrive[a] - arrive[b]) < 1.0 and arrive[a] != arrive[b]:
                pairs += 1
                flips += (arrive[a] < arrive[b]) != (first[a] < first[b])
    return flips / pairs if pairs else 0.0


def _mid(pairs: list[tuple[int, int]], k: int) -> str:
    return f"{median(p[k] for p in pairs):g}" if pairs else "-"


def _states(traffic: list, views: tuple, t0: float) -> None:
    """The engine's state as polled (the snapshot the gateway routed on), recorded and replayed, by the
    second it was taken: (waiting, running) medians."""
    rec: dict[int, list[tuple[int, int]]] = {}
    sim: dict[int, list[tuple[int, int]]] = {}
    seen = set()
    for r, v in zip(traffic, views):
        got = r.recorded.view.get("local") if r.recorded else None
        if got is not None and got.polled_s is not None and (key := round(r.time + got.polled_s, 4)) not in seen:
            seen.add(key)
            rec.setdefault(int(key - t0), []).append((got.waiting, got.running))
        mine = v.get("local")
        if mine is not None:
            sim.setdefault(int(r.time - mine.age_s - t0), []).append((mine.waiting, mine.running))
    row = []
    for sec in sorted(set(rec) | set(sim)):
        a, b = rec.get(sec, []), sim.get(sec, [])
        row.append(f"{sec}: {_mid(a, 0)}/{_mid(a, 1)} | {_mid(b, 0)}/{_mid(b, 1)}")
    print("  polled waiting/running by second, recorded | replayed:  " + ";  ".join(row))


def lineup(run: Path) -> None:
    w = json.loads((run / "window.json").read_text())
    traffic = read_ledger(run / "gateway" / "usage.sqlite3", w["since"], w["until"])
    loaded = read_policy(run / "policy.yaml", [])
    base = with_burst(with_overrides(read_perf_model_file(run / "perf.json"), loaded.perf_model),
                      burst_of(run, None), ["local"])
    hosted = [n for n in loaded.policy.backends if n != "local"]
    perf = calibrated(base, ["local"], hosted, traffic)
    checked = replay_checked(loaded, traffic, ReplaySetup(perf, litellm_price_table(), 0), True)
    out = checked.outcomes
    t0 = traffic[0].time
    loc = [i for i, r in enumerate(traffic) if r.recorded and r.recorded.backend == "local"
           and r.recorded.ttft_s is not None and out.ttft[i] is not None]
    m = {i: traffic[i].recorded.ttft_s for i in loc}
    s = {i: out.ttft[i] for i in loc}
    mstep = {i: _step(traffic[i].recorded.e2e_s, m[i], traffic[i].output_tokens) for i in loc}
    sstep = {i: _step(out.e2e[i], s[i], traffic[i].output_tokens) for i in loc}
    e = perf.engine("local")
    print(f"{run.name}: {len(loc)} local; model decode {e.decode_fixed_s * 1e3:.0f} + {e.decode_per_seq_s * 1e3:.2f} ms/seq,"
          f" prefill {e.prefill_fixed_s * 1e3:.0f} ms, overhead {e.request_overhead_s * 1e3:.0f} ms, "
          f"front end {e.frontend_service_s * 1e3:.0f} ms; engine cpu share {w['engine_speed']['cpu_share']}")
    print("  arrival s   n   TTFT med meas/repl   max meas/repl   own decode step ms meas/repl")
    by: dict[int, list[int]] = {}
    for i in loc:
        by.setdefault(int(traffic[i].time - t0), []).append(i)
    for sec, grp in sorted(by.items()):
        print(f"  {sec:9d} {len(grp):3d}   {_med([m[i] for i in grp])} / {_med([s[i] for i in grp])}"
              f"   {max(m[i] for i in grp):.2f} / {max(s[i] for i in grp):.2f}"
              f"   {_med([mstep[i] for i in grp], 1e3)} / {_med([sstep[i] for i in grp], 1e3)}")
    top = sorted(loc, key=lambda i: m[i])[-max(5, len(loc) // 10):]
    _states(traffic, checked.views, t0)
    print(f"  measured top 10% ({len(top)}): TTFT {_med([m[i] for i in top])} / {_med([s[i] for i in top])} s;"
          f" in its own decode steps {_med([m[i] / mstep[i] for i in top if mstep[i]])} /"
          f" {_med([s[i] / sstep[i] for i in top if sstep[i]])}")
    arrive = [traffic[i].time - t0 for i in loc]
    print(f"  first tokens out of arrival order (pairs within 1 s): measured "
          f"{_inversions(arrive, [a + m[i] for a, i in zip(arrive, loc)]):.2f}, replayed "
          f"{_inversions(arrive, [a + s[i] for a, i in zip(arrive, loc)]):.2f}")
    idle = [i for i in loc if (v := traffic[i].recorded.view.get("local")) and v.queued == 0 and v.running == 0]
    print(f"  at an idle engine (view: 0 queued, 0 running; {len(idle)}): TTFT {_med([m[i] for i in idle])} /"
          f" {_med([s[i] for i in idle])} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # the price table's import wants one
    for run in p.parse_args().runs:
        lineup(run)


if __name__ == "__main__":
    main()
