"""The replay checked on traffic it was not fitted to: `hybridgw replay --calibrate --calibrate-out` on one
kept `bench/replay_vs_real.py --keep DIR` run (the engine's step times, its load-dependent overhead
and the hosted API's TTFT), then `hybridgw replay --perf-model` with that file on other kept runs (other
seeds and schedules), each compared with what those runs measured. No process is started; seconds.

Where the runs recorded their engine's CPU share (window.json's engine_speed, from /v1/engine/state's step
totals), the model is fitted with `--engine-share` and carried to each checked run's share: the one thing
taken from the checked run besides its traffic (none of its TTFT, share or cost). Both are shown: the
figures carried by the share, and (`unscaled`) the model replayed as fitted, as before.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_cross.py --fit /tmp/rtA --check /tmp/rtB /tmp/rtC [--json FILE]
        [--poll-clock[=recorded]]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hybrid_economics import run_cli
from bench.replay_engine_state import recorded_burst
from bench.replay_vs_real import compare
from policies.estimator import litellm_price_table
from policies.perf_model_file import read_perf_model_file
from policies.replay.engine_args import with_burst
from policies.replay.inputs import read_policy
from policies.replay.outcome import percentile
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import read_ledger
from tests.support import procs


def _window(run: Path) -> tuple[float, float]:
    w = json.loads((run / "window.json").read_text())
    return w["since"], w["until"]


def cpu_share(run: Path) -> float | None:
    """The share of a core the run's engine steps got (bench/replay_engine_state.run_speed); None before it was kept."""
    speed = json.loads((run / "window.json").read_text()).get("engine_speed") or {}
    return speed.get("cpu_share")


def _share_args(run: Path) -> tuple[str, ...]:
    share = cpu_share(run)
    return ("--engine-share", f"local={share}") if share else ()


def _replay_cli(run: Path, model: Path, *extra: str) -> dict[str, Any]:
    since, until = _window(run)
    return json.loads(run_cli(*procs.hybridgw(
        "replay", str(run / "policy.yaml"), "--ledger", str(run / "gateway" / "usage.sqlite3"), "--since",
        f"{since:.3f}", "--until", f"{until:.3f}", "--perf-model", str(model), "--json", "-",
        "--burst-batched-tokens", str(recorded_burst(run)), *extra),  # the window's engine's burst
        env={"OPENAI_API_KEY": "x"}))


def fit(run: Path, out: Path) -> dict[str, Any]:
    """The model `replay --calibrate` fits to `run`'s own ledger, written to `out`."""
    _replay_cli(run, run / "perf.json", "--calibrate", "--calibrate-out", str(out), *_share_args(run))
    return json.loads(out.read_text())


def local_ttfts(run: Path, model: Path, without_overhead: bool = False, poll_clock: str = "") -> dict[str, float | None]:
    """Local TTFT p50/p95 measured (the ledger) and replayed with `model` (the replay's API: the CLI's
    summary has no TTFT by backend)."""
    os.environ.setdefault("OPENAI_API_KEY", "x")
    since, until = _window(run)
    traffic = read_ledger(run / "gateway" / "usage.sqlite3", since, until)
    perf = with_burst(read_perf_model_file(model), recorded_burst(run), ["local"])  # the window engine's
    share, fitted = cpu_share(run), perf.engine("local")
    if share and fitted.cpu_share:  # as --engine-share carries it
        perf = replace(perf, engines={**perf.engines, "local": fitted.at_cpu_share(share)})
    if without_overhead:
        perf = replace(perf, engines={n: replace(e, request_overhead_s=0.0, frontend_service_s=0.0)
                                      for n, e in perf.engines.items()})
    out = replay(read_policy(run / "policy.yaml", []), traffic,
                 ReplaySetup(perf, litellm_price_table(), 0, poll_clock=poll_clock))
    measured = sorted(r.recorded.ttft_s for r in traffic if r.recorded and r.recorded.backend == "local"
                      and r.recorded.ttft_s is not None)
    replayed = sorted(t for b, t in zip(out.backend, out.ttft) if b == "local" and t is not None)
    return {"measured p50": percentile(measured, 50), "measured p95": percentile(measured, 95),
            "replayed p50": percentile(replayed, 50), "replayed p95": percentile(replayed, 95)}


def check(fitted: Path, run: Path, poll_clock: str = "") -> dict[str, Any]:
    """`run` replayed with the model fitted on another, carried to `run`'s CPU share where both recorded one:
    the issue's figures, and the same unscaled (the model as fitted, as before --engine-share)
    (`poll_clock`: the replay's gateway polls on the clock fitted from the views, replay --poll-clock)."""
    extra = (f"--poll-clock={poll_clock}",) if poll_clock else ()
    measured = json.loads((run / "gateway" / "bench" / "results.json").read_text())
    carried = _share_args(run) if json.loads(fitted.read_text())["engines"]["local"].get("cpu_share") else ()
    rows = compare(measured, _replay_cli(run, fitted, *extra, *carried))
    unscaled = {n: (p, off) for n, _, p, off in compare(measured, _replay_cli(run, fitted, *extra))}
    return {"run": str(run), "window": json.loads((run / "window.json").read_text()), "carried": bool(carried),
            "figures": {n: {"measured": m, "predicted": p, "off": off, "unscaled": unscaled[n][0],
                            "off_unscaled": unscaled[n][1]} for n, m, p, off in rows},
            "local_ttft": local_ttfts(run, fitted, poll_clock=poll_clock)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fit", type=Path, required=True, help="a kept run: the model is fitted to its ledger")
    p.add_argument("--check", type=Path, nargs="+", required=True, help="kept runs to predict with that model")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--poll-clock", nargs="?", const="period", default="", help="replay with --poll-clock[=recorded]")
    a = p.parse_args()
    out = a.fit / "calibrated-model-refit.json"
    model = fit(a.fit, out)
    local = model["engines"]["local"]
    print(f"fitted on {a.fit} ({json.loads((a.fit / 'window.json').read_text())}): {local['source']}")
    results = [check(out, run, a.poll_clock) for run in a.check]
    for r in results:
        how = "carried to its CPU share" if r["carried"] else "no CPU share recorded: as fitted"
        print(f"\n{r['run']} ({r['window']}):\n| figure | measured | replayed, model of {a.fit.name} ({how}) "
              "| off by | unscaled (as fitted) | off by |\n|---|---:|---:|---:|---:|---:|")
        for name, f in r["figures"].items():
            fmt = "{:.1%}" if name == "local share" else "{:.5f}" if "$" in name else "{:.3f}"

            def show(v: float | None, fmt: str = fmt) -> str:
                return "-" if v is None else fmt.format(v)

            print(f"| {name} | {show(f['measured'])} | {show(f['predicted'])} | {f['off']} "
                  f"| {show(f['unscaled'])} | {f['off_unscaled']} |")
        lt = r["local_ttft"]

        def pair(d: dict[str, float | None], which: str) -> str:
            return " / ".join("-" if d[f"{which} {q}"] is None else f"{d[f'{which} {q}']:.3f}" for q in ("p50", "p95"))

        print(f"| local TTFT p50 / p95 s (ledger) | {pair(lt, 'measured')} | {pair(lt, 'replayed')} | | | |")
    if a.json:
        a.json.write_text(json.dumps({"fit": str(a.fit), "model": model, "checks": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
