"""The options of `hybridgw bench`: the parser and their reading into the frozen specs the run
takes (workload, load levels, SLOs, headers); a bad option is a `UsageError` with one clear line."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from observability.bench import workload
from observability.bench.arrivals import ClosedLoop, Load, OpenLoop, mean_rate, scheduled_offsets
from observability.bench.lengths import HELP as LENGTH_HELP
from observability.bench.lengths import LengthSpecError, parse_length
from observability.bench.metrics import Slo
from observability.bench.sweep import parse_levels

SLO_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "e2el": "e2e_s"}


class UsageError(ValueError):
    """A bad option; printed as one line with exit status 2."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hybridgw bench",
        description="Load-test an OpenAI-compatible URL "
        "(streamed) and measure TTFT, ITL, TPOT, E2E, throughput and goodput.",
    )
    p.add_argument("url", help="base URL: http://host:port, .../v1, or the full endpoint URL")
    p.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    p.add_argument("--model", help="model name to send (default: the first from GET /v1/models)")
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="[TEAM=]KEY",
        help="bearer key; repeat for several teams (requests take them in turn); default $OPENAI_API_KEY",
    )
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra request header")
    _workload_options(p.add_argument_group("workload"))
    _load_options(p.add_argument_group("load"))
    o = p.add_argument_group("output")
    o.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="NAME:MS",
        help="goodput bound, repeatable: ttft:500 tpot:50 e2e:5000 (milliseconds)",
    )
    o.add_argument("--out", type=Path, help="results folder (default ./hybridgw-bench/<UTC time>)")
    o.add_argument("--no-progress", action="store_true")
    return p


def _workload_options(w: argparse._ArgumentGroup) -> None:
    w.add_argument("--preset", choices=workload.PRESETS, default="mixed", help="ISL/OSL query pattern")
    w.add_argument("--isl", help=f"input length (overrides the preset): {LENGTH_HELP}")
    w.add_argument("--osl", help="output length (max_tokens), same forms as --isl")
    w.add_argument(
        "--length-scale", type=float, default=1.0, help="multiply the preset's lengths (e.g. 0.1 on CPU)"
    )
    w.add_argument("--tenants", type=int, default=0, help="shared system prompts (prefix-cache tenants)")
    w.add_argument("--prefix-tokens", type=int, default=0, help="tokens in each tenant's shared prompt")
    w.add_argument(
        "--ignore-eos", action="store_true", help="send ignore_eos + min_tokens so outputs hit --osl"
    )
    w.add_argument(
        "--tokenizer",
        choices=("o200k_base", "cl100k_base", "server"),
        default="o200k_base",
        help="what prompt lengths are counted in: a tiktoken encoding (default o200k_base, as AIPerf's "
        "builtin) or `server`, the target's own tokenizer through its /tokenize (vLLM, SGLang, our engine)",
    )


def _load_options(load: argparse._ArgumentGroup) -> None:
    load.add_argument("--concurrency", type=int, help="closed loop: this many requests in flight (default 1)")
    load.add_argument("--rate", type=float, help="open loop: mean requests per second")
    load.add_argument(
        "--rate-schedule",
        metavar="R:S,R:S",
        help="open loop, busy and quiet periods: 8:30,1:30 = 8 req/s for 30 s, then 1 req/s for 30 s, ...",
    )
    load.add_argument("--arrival", choices=("poisson", "gamma"), default="poisson")
    load.add_argument(
        "--gamma-shape", type=float, default=1.0, help="gamma arrivals: shape k (burstier below 1)"
    )
    load.add_argument(
        "--sweep-rate", metavar="R1,R2,...", help="sweep: open loop at each rate, stop at saturation"
    )
    load.add_argument(
        "--sweep-concurrency", metavar="C1,C2,...", help="sweep: closed loop at each concurrency"
    )
    load.add_argument(
        "--requests", type=int, default=100, help="measured requests (upper bound; per sweep level)"
    )
    load.add_argument("--duration", type=float, help="stop sending measured requests after this many seconds")
    load.add_argument("--warmup", type=int, default=0, help="requests sent first and left out of the numbers")
    load.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without a byte before a request counts as stalled",
    )
    load.add_argument("--seed", type=int, default=0)


def teams(keys: list[str]) -> tuple[workload.Team, ...]:
    if not keys:
        return (workload.Team("default", os.environ.get("OPENAI_API_KEY") or None),)
    teams = []
    for i, item in enumerate(keys):
        name, sep, key = item.partition("=")
        teams.append(workload.Team(name, key) if sep and name and key else workload.Team(f"key{i + 1}", item))
    return tuple(teams)


def slo(items: list[str]) -> Slo:
    bounds: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition(":")
        try:
            bounds[SLO_KEYS[name.strip().lower()]] = float(value) / 1000
        except (KeyError, ValueError):
            raise UsageError(f"cannot read --slo {item!r}: expected ttft:MS, tpot:MS or e2e:MS") from None
    return Slo(**bounds)


def loads(args: argparse.Namespace) -> tuple[str | None, list[Load]]:
    """The load levels: one (a plain run), or a sweep's ("rate" or "concurrency", rising levels)."""
    kinds = ("rate", "rate_schedule", "concurrency", "sweep_rate", "sweep_concurrency")
    given = [n for n in kinds if getattr(args, n) is not None]
    if len(given) > 1:
        flags = " and ".join("--" + n.replace("_", "-") for n in given)
        raise UsageError(f"give one of {', '.join('--' + k.replace('_', '-') for k in kinds)}, not {flags}")
    if args.gamma_shape <= 0:
        raise UsageError("--gamma-shape must be positive")
    shape = args.gamma_shape if args.arrival == "gamma" else 1.0
    try:
        if args.sweep_rate is not None:
            return "rate", [OpenLoop(r, shape) for r in parse_levels(args.sweep_rate)]
        if args.sweep_concurrency is not None:
            levels = parse_levels(args.sweep_concurrency)
            if any(c != int(c) for c in levels):
                raise ValueError("concurrencies are whole numbers")
            return "concurrency", [ClosedLoop(int(c)) for c in levels]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.rate_schedule is not None:
        schedule = parse_schedule(args.rate_schedule)
        return None, [OpenLoop(mean_rate(schedule), shape, schedule=schedule)]
    if args.rate is not None:
        if args.rate <= 0:
            raise UsageError("--rate must be positive")
        return None, [OpenLoop(args.rate, shape)]
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    return None, [ClosedLoop(args.concurrency or 1)]


def parse_schedule(text: str) -> tuple[tuple[float, float], ...]:
    """`8:30,1:30` → 8 req/s for 30 s, then 1 req/s for 30 s, repeated."""
    try:
        periods = tuple((float(r), float(d)) for r, _, d in (p.partition(":") for p in text.split(",")))
        scheduled_offsets(1, periods)  # validates
    except ValueError:
        raise UsageError(
            f"cannot read --rate-schedule {text!r}: expected RATE:SECONDS,RATE:SECONDS,..."
        ) from None
    return periods


def headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"cannot read --header {item!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def spec(args: argparse.Namespace) -> workload.WorkloadSpec:
    try:
        isl = parse_length(args.isl) if args.isl else None
        osl = parse_length(args.osl) if args.osl else None
    except LengthSpecError as exc:
        raise UsageError(str(exc)) from None
    if args.tenants < 0 or args.prefix_tokens < 0 or (args.tenants > 0) != (args.prefix_tokens > 0):
        raise UsageError("--tenants and --prefix-tokens go together, both positive")
    if args.requests < 1 or args.warmup < 0 or args.timeout <= 0 or args.length_scale <= 0:
        raise UsageError("--requests, --timeout and --length-scale must be positive, --warmup not negative")
    return workload.WorkloadSpec(
        args.preset,
        isl,
        osl,
        args.length_scale,
        args.tenants,
        args.prefix_tokens,
        teams(args.api_key),
        args.ignore_eos,
        args.seed,
    )


def settings(args: argparse.Namespace, model: str, loads: list[Load]) -> dict[str, Any]:
    """What the JSON records about the run (never the keys themselves)."""
    kept = {k: v for k, v in vars(args).items() if k not in ("api_key", "header", "out")}
    return {
        **kept,
        "model": model,
        "load": ", ".join(repr(load) for load in loads),
        "teams": [t.name for t in teams(args.api_key)],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
