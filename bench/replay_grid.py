"""Every kept run predicted by every other's fitted model (and by its own, in-sample), carried to the checked
run's engine CPU share and unscaled side by side: the issue's four figures off by (replayed vs measured) and
how many cells meet the bars (TTFT p50 / p95 within 25% by the gateway's ledger, local share within 5
points, total cost within 5%). Kept runs: `bench/replay_vs_real.py --keep DIR`; no process is started.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_grid.py /tmp/ho_rv_h /tmp/ho_rv_i /tmp/ho_rv_j [--json FILE] [--poll-clock]

From the checked run it takes its traffic (the ledger's arrivals, lengths, teams) and its engine's CPU share
(window.json's engine_speed, from /v1/engine/state's step totals): none of its TTFT, local share or cost.
`--speed FIGURE` carries by another speed figure instead (the step terms × the checked run's ÷ the fitted
run's): `mean_step_s` (the engine's totals), `decode_step_16_s` (its reported rates; perf-in-run.json for
runs kept before engine_speed), `probe_itl_s` (the pre-run profile's burst ITL, p-batch) — the comparison
that chose the share (docs/benchmarks.md, "Held out across host loads"). `--gateway FIGURE,...` adds a column
per figure of the host around the engine (window.json's `host`, bench/replay_host_share.py): carried by the
engine's share as above, and the time outside the steps (request overhead, front end) × the checked run's
figure ÷ the fitted run's (a delay: `healthz_*`) or the inverse (a share: `host_share`, `gateway_busy`,
`gateway_free` = 1 − its involuntary switches' share), or `polls`: --poll-clock at the period the checked
run's own ledger views show (its gateway's polls, late on a loaded host) — docs/benchmarks.md, session 10.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from statistics import median

from bench.replay_cross import cpu_share
from bench.replay_engine_state import recorded_burst
from bench.replay_vs_real import compare
from policies.perf_model import OVERHEAD_TERMS, STEP_TERMS
from policies.replay.cli import main as replay_main

BARS = (25.0, 25.0, 5.0, 5.0)  # TTFT p50 %, TTFT p95 %, local share points, total cost %
FIGURES = ("TTFT p50 s (gateway ledger)", "TTFT p95 s (gateway ledger)", "local share", "total cost $")


def _replay(run: Path, *extra: str) -> dict[str, Any]:
    """`hybridgw replay` of the run's window (its engine's burst budget unless `extra` gives one)."""
    w = json.loads((run / "window.json").read_text())
    if "--burst-batched-tokens" not in extra:
        extra = (*extra, "--burst-batched-tokens", str(recorded_burst(run)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = replay_main([str(run / "policy.yaml"), "--ledger", str(run / "gateway" / "usage.sqlite3"), "--since",
                            f"{w['since']:.3f}", "--until", f"{w['until']:.3f}", "--json", "-", *extra])
    if code:
        raise RuntimeError(f"replay of {run} failed ({code})")
    return json.loads(out.getvalue())


def speed(run: Path, figure: str) -> float | None:
    """A step-time figure of the run's engine (larger: slower), or None where the run did not keep it."""
    kept = json.loads((run / "window.json").read_text()).get("engine_speed") or {}
    if figure == "probe_itl_s":
        burst = json.loads((run / "p-batch" / "results.json").read_text())["requests"]
        return median(r["itl_mean_s"] for r in burst if not r["warmup"] and r["error"] is None and r["itl_mean_s"])
    if figure == "decode_step_16_s" and figure not in kept and (run / "perf-in-run.json").exists():
        e = json.loads((run / "perf-in-run.json").read_text())["engines"]["local"]
        return e["decode_fixed_s"] + 16 * e["decode_per_seq_s"]
    return kept.get(figure)


def host_figure(run: Path, figure: str) -> float | None:
    """A figure of the host around the run's engine as a delay (larger: slower), None where not kept."""
    host = json.loads((run / "window.json").read_text()).get("host") or {}
    if figure == "gateway_free":
        return 1 / (1 - host["gateway_invol"]) if host.get("gateway_invol") is not None else None
    value = host.get(figure)
    return value if figure.startswith("healthz") or not value else 1 / value


def _scaled(model: Path, factor: float, out: Path, terms: tuple[str, ...] = STEP_TERMS) -> Path:
    data = json.loads(model.read_text())
    for name in terms:
        data["engines"]["local"][name] = data["engines"]["local"].get(name, 0.0) * factor
    out.write_text(json.dumps(data))
    return out


def _share(run: Path) -> tuple[str, ...]:
    share = cpu_share(run)
    return ("--engine-share", f"local={share}") if share else ()


def offs(run: Path, replayed: dict[str, Any]) -> list[float]:
    """The four figures' error: % for TTFT and cost, points for the local share."""
    measured = json.loads((run / "gateway" / "bench" / "results.json").read_text())
    got = {n: (m, p) for n, m, p, _ in compare(measured, replayed)}
    return [(got[n][1] - got[n][0]) * 100 if n == "local share" else (got[n][1] / got[n][0] - 1) * 100
            for n in FIGURES]


def _carried(fit: Path, check: Path, model: Path, figure: str, scratch: Path,
             clock: tuple[str, ...]) -> dict[str, Any] | None:
    if figure == "cpu_share":
        return _replay(check, "--perf-model", str(model), *_share(check), *clock) if _share(fit) and _share(check) else None
    fitted, checked = speed(fit, figure), speed(check, figure)
    if not fitted or not checked:
        return None
    return _replay(check, "--perf-model", str(_scaled(model, checked / fitted, scratch / "scaled.json")), *clock)


def _polled(check: Path, model: Path, own: Path, scratch: Path) -> list[float] | None:
    """`check` predicted by `model` carried by the engine's share, its gateway polling on the period `check`'s
    own ledger views show (`own`: its fitted model's state_poll_s) with --poll-clock."""
    data = json.loads(model.read_text())
    data["engines"]["local"]["state_poll_s"] = json.loads(own.read_text())["engines"]["local"]["state_poll_s"]
    (scratch / "polls.json").write_text(json.dumps(data))
    return offs(check, _replay(check, "--perf-model", str(scratch / "polls.json"), *_share(check), "--poll-clock"))


def _gateway(fit: Path, check: Path, model: Path, figure: str, scratch: Path, clock: tuple[str, ...],
             own: Path | None = None) -> list[float] | None:
    """`check` predicted by `fit`'s model carried by the engine's share and its overhead by a host figure
    (`polls+FIGURE`: and polling as `check`'s views show, `own` its fitted model)."""
    polls, _, figure = figure.rpartition("+")
    fitted, checked = host_figure(fit, figure), host_figure(check, figure)
    if not fitted or not checked or not _share(fit) or not _share(check):
        return None
    scaled = _scaled(model, checked / fitted, scratch / "gw.json", OVERHEAD_TERMS)
    if polls and own is not None:
        return _polled(check, scaled, own, scratch)
    return offs(check, _replay(check, "--perf-model", str(scaled), *_share(check), *clock))


def grid(runs: list[Path], scratch: Path, figure: str = "cpu_share", poll_clock: str = "",
         gateway: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    clock = (f"--poll-clock={poll_clock}",) if poll_clock else ()
    models = {}
    for run in runs:  # each run's own model, fitted at its own share (the run directory is not written)
        models[run] = scratch / f"{run.name}.json"
        _replay(run, "--perf-model", str(run / "perf.json"), "--calibrate", "--calibrate-out", str(models[run]),
                *_share(run))
    rows = []
    for fit in runs:
        for check in runs:
            unscaled = offs(check, _replay(check, "--perf-model", str(models[fit]), *clock))
            replayed = _carried(fit, check, models[fit], figure, scratch, clock) if fit != check else None
            carried = offs(check, replayed) if replayed is not None else unscaled  # in-sample: its own speed
            rows.append({"fit": fit.name, "check": check.name, "unscaled": unscaled, "carried": carried,
                         **{g: (_polled(check, models[fit], models[check], scratch) if g == "polls" else
                                _gateway(fit, check, models[fit], g, scratch, clock, models[check])
                                if fit != check else carried)
                            for g in gateway}})
    return rows


def _cells(v: list[float]) -> str:
    return " / ".join(f"{x:+.0f}" if i != 2 else f"{x:+.1f}" for i, x in enumerate(v))


def _met(rows: list[dict[str, Any]], key: str) -> str:
    per = [sum(abs(r[key][i]) <= BARS[i] for r in rows) for i in range(4)]
    every = sum(all(abs(x) <= b for x, b in zip(r[key], BARS)) for r in rows)
    return f"{' / '.join(map(str, per))} of {len(rows)} (all four: {every})"


def main() -> int:
    os.environ.setdefault("OPENAI_API_KEY", "x")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="kept runs (bench/replay_vs_real.py --keep DIR)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--speed", default="cpu_share", choices=("cpu_share", "mean_step_s", "decode_step_16_s", "probe_itl_s"),
                   help="the figure a model is carried by (default: the engine's CPU share, replay --engine-share)")
    p.add_argument("--poll-clock", nargs="?", const="period", default="", help="every replay with --poll-clock[=…]")
    p.add_argument("--gateway", default="", help="host figures, comma-separated: a column carried by each (above)")
    a = p.parse_args()
    gateway = tuple(g for g in a.gateway.split(",") if g)
    with tempfile.TemporaryDirectory() as scratch:
        rows = grid(a.runs, Path(scratch), a.speed, a.poll_clock, gateway)
    print(f"| fitted → checked | CPU share | unscaled: p50 / p95 / share / cost | carried by {a.speed} |\n|---|---|---:|---:|")
    for r in rows:
        shares = " → ".join(f"{cpu_share(Path(d)) or 0:.2f}" for d in (next(x for x in a.runs if x.name == r["fit"]),
                                                                     next(x for x in a.runs if x.name == r["check"])))
        print(f"| {r['fit']} → {r['check']} | {shares} | {_cells(r['unscaled'])} | {_cells(r['carried'])} |")
    held = [r for r in rows if r["fit"] != r["check"]]
    own = [r for r in rows if r["fit"] == r["check"]]
    print(f"\nheld out, met p50 / p95 / share / cost: unscaled {_met(held, 'unscaled')}; carried {_met(held, 'carried')}")
    for g in gateway:
        if g == "polls":
            print(f"in-sample, --poll-clock: {_met([r for r in own if r[g]], g)}")
        print(f"held out, carried + time outside the steps by {g}: {_met([r for r in held if r[g]], g)}")
    print(f"in-sample: {_met(own, 'unscaled')}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
