"""Where a loaded run's local requests waited inside the engine (a `bench/replay_vs_real.py --spans --keep`
run: engine.log holds the engine's spans, whose attributes say when the step loop took each request in
and how many steps ran before its first). Splits the engine's queue into intake (submitted on the
server's event loop → taken in by the step loop) and the scheduler's queue (→ its first step), the
prefill into its steps (→ the end of the step that sampled its first token) and the handoff (→ the
server's event loop has it), and counts the steps waited, those that took no waiting request in, and
the steps its prompt took. Where the spans say what a prompt's first step held, those steps' wall time
against the model `replay --calibrate` fitted to the run.

    PYTHONPATH=$PWD .venv/bin/python bench/replay_intake.py /work/rec13/g2 [...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median
from typing import Any

from bench.engine_spans import span_time
from bench.replay_breakdown import engine_roots, local_matches, read_ledger_rows
from policies.perf_model import EngineModel
from policies.perf_model_file import read_perf_model_file

PHASES = ("gateway", "to engine", "intake", "queue", "prefill", "handoff", "back")


def queue_spans(log: str) -> list[dict[str, Any]]:
    """The engine's root spans with their queue attributes, as dicts of unix seconds and counts."""
    out = []
    for s, q, p in engine_roots(log):
        a = s["attributes"]
        if "hybridgw.engine.queue.taken_in_ns" not in a:
            continue
        out.append({"arrived": span_time(s["start_time"]), "taken_in": a["hybridgw.engine.queue.taken_in_ns"] / 1e9,
                    "scheduled": span_time(q["end_time"]), "first_token": span_time(p["end_time"]),
                    "prompt_tokens": int(a["gen_ai.usage.input_tokens"]), "ahead": a["hybridgw.engine.queue.ahead"],
                    "steps": a["hybridgw.engine.queue.steps"], "no_admit": a["hybridgw.engine.queue.steps_no_admit"],
                    "sampled": a.get("hybridgw.engine.prefill.sampled_ns", 0) / 1e9,
                    "prefill_steps": a.get("hybridgw.engine.prefill.steps", 0),
                    "step_decodes": a.get("hybridgw.engine.prefill.first_step_decodes"),
                    "step_prompt_tokens": a.get("hybridgw.engine.prefill.first_step_prompt_tokens")})
    return sorted(out, key=lambda e: e["arrived"])


def matched(rows: list[dict[str, Any]], spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each local ledger row with the earliest unmatched span of its prompt tokens arriving after the
    gateway sent it (bench/replay_breakdown.py's local_matches): its phases in seconds and queue counts."""
    out = []
    for r, sent, j in local_matches(rows, [e["arrived"] for e in spans], [e["prompt_tokens"] for e in spans]):
        e = spans[j]
        out.append({"time": r["time"], "ttft": r["ttft_s"], "gateway": sent - r["time"], "to engine": e["arrived"] - sent,
                    "intake": e["taken_in"] - e["arrived"], "queue": e["scheduled"] - e["taken_in"],
                    "prefill": (e["sampled"] or e["first_token"]) - e["scheduled"],
                    "handoff": e["first_token"] - (e["sampled"] or e["first_token"]),
                    "back": r["time"] + r["ttft_s"] - e["first_token"], "ahead": e["ahead"], "steps": e["steps"],
                    "no_admit": e["no_admit"], "prefill_steps": e["prefill_steps"], "prompt": r["prompt_tokens"]})
    return out


def _row(label: str, group: list[dict[str, Any]]) -> str:
    if not group:
        return f"| {label} | 0 |" + " |" * (len(PHASES) + 6)
    cells = [f"{median(r[k] for r in group):.3f}" for k in ("ttft", *PHASES)]
    counts = [f"{median(r[k] for r in group):g}" for k in ("ahead", "steps", "no_admit", "prefill_steps")]
    steps = sum(r["steps"] for r in group)
    share = f"{sum(r['no_admit'] for r in group) / steps:.0%}" if steps else "-"
    return f"| {label} | {len(group)} | " + " | ".join(cells + counts) + f" | {share} |"


def prompt_steps(spans: list[dict[str, Any]], model: EngineModel) -> list[str]:
    """Each step that took a prompt in whole and sampled it (one per step: its first span), its wall time
    against the fitted model's for the same decodes and prompt tokens, by prompt tokens (medians)."""
    steps = {}
    for e in spans:
        if e["prefill_steps"] == 1 and e["sampled"] and e["step_decodes"] is not None:
            steps.setdefault(e["scheduled"], (e["sampled"] - e["scheduled"], e["step_decodes"], e["step_prompt_tokens"]))
    if not steps:
        return []
    lines = ["| prompt tokens in the step | steps | decodes beside | wall s | the fitted model's s | wall / model |",
             "|---|---:|---:|---:|---:|---:|"]
    for lo, hi in ((1, 64), (65, 128), (129, 256), (257, 10**9)):
        group = [(w, d, t) for w, d, t in steps.values() if lo <= t <= hi]
        if not group:
            continue
        wall = median(w for w, _, _ in group)
        mod = median(model.mixed_time(d, 0, t) if d else model.prefill_time(t) for _, d, t in group)
        label = f"{lo}-{hi}" if hi < 10**9 else f"> {lo - 1}"
        lines.append(f"| {label} | {len(group)} | {median(d for _, d, _ in group):g} | {wall:.3f} | {mod:.3f} | {wall / mod:.2f} |")
    return lines


def report(run: Path) -> str:
    window = json.loads((run / "window.json").read_text())
    spans = queue_spans((run / "engine.log").read_text(errors="replace"))
    rows = matched(read_ledger_rows(run / "gateway" / "usage.sqlite3", window["since"], window["until"]), spans)
    if not rows:
        return f"{run}: no local request matched a span with queue attributes"
    t0 = min(r["time"] for r in rows)
    by_ttft = sorted(rows, key=lambda r: r["ttft"])
    head = ("| local requests (medians) | n | TTFT | " + " | ".join(PHASES)
            + " | ahead | steps waited | no-admit steps | prompt's steps | no-admit share |")
    lines = [f"{run.name}: {len(rows)} local requests; load average at the end {window.get('load_average')}; "
             f"engine {window.get('engine_speed')}", head, "|---|---:|" + "---:|" * (len(PHASES) + 6)]
    lines.append(_row("all", rows))
    lines.append(_row("slowest 10% by TTFT", by_ttft[int(0.9 * len(by_ttft)):]))
    lines.append(_row("fastest 50%", by_ttft[:len(by_ttft) // 2]))
    for second in range(int(max(r["time"] for r in rows) - t0) + 1):
        group = [r for r in rows if second <= r["time"] - t0 < second + 1]
        if group:
            lines.append(_row(f"arrived at {second} s", group))
    fitted = run / "calibrated-model.json"
    if fitted.exists():
        table = prompt_steps(spans, read_perf_model_file(fitted).engine("local"))
        if table:
            lines += ["", f"{run.name}: the steps that took a prompt in whole, against `replay --calibrate`'s model", *table]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="kept runs with engine.log (replay_vs_real --spans --keep)")
    for run in p.parse_args().runs:
        print(report(run), end="\n\n")


if __name__ == "__main__":
    main()
