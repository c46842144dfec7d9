"""`hybridgw router eval DATA.csv…`: the shipped difficulty router against random routing, a
prompt-length-only router and the oracle on labelled data in RouteLLM's response format."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from policies.quality import dataset, metrics
from policies.quality.eval_html import render_html
from policies.quality.load import WEIGHTS_FILE, load_scorer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw router", description="Evaluate the difficulty router.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="APGR, CPT(50%%), CPT(80%%) and the quality curve on labelled prompts")
    ev.add_argument("files", nargs="+", type=Path, help="CSV: prompt, weak correct, strong correct (True/False)")
    ev.add_argument("--contaminated", type=Path, help="prompts to drop (RouteLLM's jsonl, or one per line)")
    ev.add_argument("--weak", help="the weak model's column (default: the first after prompt)")
    ev.add_argument("--strong", help="the strong model's column (default: the second after prompt)")
    ev.add_argument("--weights", type=Path, default=WEIGHTS_FILE, help="difficulty weights (default: shipped)")
    ev.add_argument("--html", type=Path, help="write the curve and the table to this HTML file")
    ev.add_argument("--resamples", type=int, default=200, help="bootstrap resamples (default 200)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random router and the bootstrap")
    return parser


def _load(args: argparse.Namespace) -> tuple[dataset.Labelled, list[str]]:
    data = dataset.concat([dataset.read_csv(f, args.weak, args.strong) for f in args.files])
    notes = [(f"{len(data.prompts)} prompts from {len(args.files)} file(s); weak = {data.weak_name}, "
             f"strong = {data.strong_name}")]
    if args.contaminated:
        data, dropped = dataset.drop(data, dataset.read_contaminated(args.contaminated))
        notes.append(f"dropped {dropped} contaminated prompts listed in {args.contaminated}")
    if not data.prompts:
        raise ValueError("no prompts left to evaluate")
    return data, notes


def _table(results: list[metrics.RouterResult]) -> str:
    def ci(pair: tuple[float, float], pct: bool = False) -> str:
        return "" if np.isnan(pair[0]) else (f" [{pair[0]:.1%}, {pair[1]:.1%}]" if pct
                                               else f" [{pair[0]:.3f}, {pair[1]:.3f}]")

    def share(v: float) -> str:
        return "n/a" if np.isnan(v) else f"{v:.1%}"

    lines = [f"{'router':<12} {'APGR [95% CI]':<24} {'CPT(50%) [95% CI]':<26} CPT(80%) [95% CI]"]
    for r in results:
        lines.append(f"{r.name:<12} {f'{r.apgr:.3f}{ci(r.apgr_ci)}':<24} "
                     f"{share(r.cpt50) + ci(r.cpt50_ci, True):<26} {share(r.cpt80)}{ci(r.cpt80_ci, True)}")
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    data, notes = _load(args)
    scorer = load_scorer(args.weights)
    routers = {
        "difficulty": np.array([scorer.score_text(p) for p in data.prompts]),
        "length": np.array([len(p) for p in data.prompts], dtype=np.float64),
        "random": metrics.random_scores(len(data.prompts), args.seed),
        "oracle": metrics.oracle_scores(data.weak, data.strong),
    }
    results = metrics.evaluate(data.weak, data.strong, routers, resamples=args.resamples, seed=args.seed)
    weak_acc, strong_acc = float(data.weak.mean()), float(data.strong.mean())
    notes.append(f"weak accuracy {weak_acc:.3f}, strong accuracy {strong_acc:.3f}; "
                 f"{args.resamples} bootstrap resamples, seed {args.seed}")
    if strong_acc <= weak_acc:
        notes.append("the strong model is not better here: APGR and CPT are undefined")
    print("\n".join(notes), end="\n\n")
    print(_table(results))
    if args.html:
        args.html.write_text(render_html("router eval: quality vs calls to the strong model", results, weak_acc,
                                         strong_acc, notes), encoding="utf-8")
        print(f"\nwrote {args.html}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _eval(args)
    except ValueError as exc:
        print(f"hybridgw router {args.command}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --html in a missing folder, a full disk ...
        print(f"hybridgw router {args.command}: cannot write: {exc}", file=sys.stderr)
        return 1
