"""`hybridgw bench URL`: parse the options, build the workload, run it, print the summary and write
results.json, requests.csv and report.html; bad input ends with one clear line, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from observability.bench import workload
from observability.bench.arrivals import ClosedLoop, Load, OpenLoop
from observability.bench.client import Client, Sent, Target
from observability.bench.lengths import HELP as LENGTH_HELP
from observability.bench.lengths import LengthSpecError, parse_length
from observability.bench.metrics import Slo, summarize
from observability.bench.output import Progress, render_csv, render_json, render_table
from observability.bench.prompts import PromptBuilder
from observability.bench.records import RequestRecord
from observability.bench.report_html import render_html
from observability.bench.runner import RunSpec, Sink, run
from observability.bench.server_info import ServerInfoError, first_model

SLO_KEYS = {"ttft": "ttft_s", "tpot": "tpot_s", "e2e": "e2e_s", "e2el": "e2e_s"}


class UsageError(ValueError):
    """A bad option; printed as one line with exit status 2."""


def _parser() -> argparse.ArgumentParser:
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
    w = p.add_argument_group("workload")
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
        choices=("cl100k_base", "o200k_base"),
        help="tiktoken encoding the prompts are measured in (default: by model name)",
    )
    load = p.add_argument_group("load")
    load.add_argument("--concurrency", type=int, help="closed loop: this many requests in flight (default 1)")
    load.add_argument("--rate", type=float, help="open loop: mean requests per second")
    load.add_argument("--arrival", choices=("poisson", "gamma"), default="poisson")
    load.add_argument(
        "--gamma-shape", type=float, default=1.0, help="gamma arrivals: shape k (burstier below 1)"
    )
    load.add_argument("--requests", type=int, default=100, help="measured requests (upper bound)")
    load.add_argument("--duration", type=float, help="stop sending measured requests after this many seconds")
    load.add_argument("--warmup", type=int, default=0, help="requests sent first and left out of the numbers")
    load.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without a byte before a request counts as stalled",
    )
    load.add_argument("--seed", type=int, default=0)
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


def _teams(keys: list[str]) -> tuple[workload.Team, ...]:
    if not keys:
        return (workload.Team("default", os.environ.get("OPENAI_API_KEY") or None),)
    teams = []
    for i, item in enumerate(keys):
        name, sep, key = item.partition("=")
        teams.append(workload.Team(name, key) if sep and name and key else workload.Team(f"key{i + 1}", item))
    return tuple(teams)


def _slo(items: list[str]) -> Slo:
    bounds: dict[str, float] = {}
    for item in items:
        name, _, value = item.partition(":")
        try:
            bounds[SLO_KEYS[name.strip().lower()]] = float(value) / 1000
        except (KeyError, ValueError):
            raise UsageError(f"cannot read --slo {item!r}: expected ttft:MS, tpot:MS or e2e:MS") from None
    return Slo(**bounds)


def _load(args: argparse.Namespace) -> Load:
    if args.rate is not None and args.concurrency is not None:
        raise UsageError("give --rate (open loop) or --concurrency (closed loop), not both")
    if args.rate is not None:
        if args.rate <= 0 or args.gamma_shape <= 0:
            raise UsageError("--rate and --gamma-shape must be positive")
        return OpenLoop(args.rate, args.gamma_shape if args.arrival == "gamma" else 1.0)
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    return ClosedLoop(args.concurrency or 1)


def _headers(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"cannot read --header {item!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def _spec(args: argparse.Namespace) -> workload.WorkloadSpec:
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
        _teams(args.api_key),
        args.ignore_eos,
        args.seed,
    )


def _settings(args: argparse.Namespace, model: str, encoding: str, load: Load) -> dict[str, Any]:
    """What the JSON records about the run (never the keys themselves)."""
    kept = {k: v for k, v in vars(args).items() if k not in ("api_key", "header", "out")}
    return {
        **kept,
        "model": model,
        "tokenizer": encoding,
        "load": repr(load),
        "teams": [t.name for t in _teams(args.api_key)],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _bench(args)
    except UsageError as exc:
        print(f"hybridgw bench: {exc}", file=sys.stderr)
        return 2


def _bench(args: argparse.Namespace) -> int:
    spec, load, slo, headers = _spec(args), _load(args), _slo(args.slo), _headers(args.header)
    try:
        target = Target.parse(args.url, args.endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        model = args.model or first_model(target, headers, spec.teams[0].api_key)
    except ServerInfoError as exc:
        print(f"hybridgw bench: {exc}", file=sys.stderr)
        return 1
    from policies.tokens import encoding_name_for

    encoding = args.tokenizer or encoding_name_for(model)
    plans = workload.build_plans(spec, args.warmup + args.requests, PromptBuilder(encoding))
    sents = [
        Sent(
            workload.request_body(p, model, args.endpoint, spec.ignore_eos),
            p.team.api_key,
            RequestRecord(p.index, p.pattern, p.team.name, p.isl, p.osl, 0.0, 0.0, tenant=p.tenant),
        )
        for p in plans
    ]
    progress = Progress(args.requests, enabled=not args.no_progress)
    sink = Sink(progress)
    try:
        asyncio.run(
            _drive(
                Client(target, headers, args.timeout),
                sents[: args.warmup],
                sents[args.warmup :],
                RunSpec(load, args.duration, args.seed),
                sink,
            )
        )
    except KeyboardInterrupt:
        sink.stopped = "interrupted"
    finally:
        progress.close()
    return _finish(args, sink, _settings(args, model, encoding, load), slo)


async def _drive(client: Client, warmup: list[Sent], measured: list[Sent], spec: RunSpec, sink: Sink) -> None:
    try:
        await run(client, warmup, measured, spec, sink)
    finally:
        client.close()  # inside the loop: the transports need it to close


def _finish(args: argparse.Namespace, sink: Sink, settings: dict[str, Any], slo: Slo) -> int:
    records = sorted(sink.records, key=lambda r: r.index)
    summary = summarize(records, slo)
    out = args.out or Path("hybridgw-bench") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_bytes(render_json(settings, summary, records, sink.stopped))
    (out / "requests.csv").write_text(render_csv(records), encoding="utf-8")
    (out / "report.html").write_text(render_html(settings, summary, records), encoding="utf-8")
    sys.stdout.write(render_table(summary))
    print(f"wrote {out}/results.json, requests.csv, report.html", file=sys.stderr)
    if sink.stopped:
        print(f"hybridgw bench: stopped early: {sink.stopped} (partial results saved)", file=sys.stderr)
    if summary.requests and not summary.ok:
        first = next(r for r in records if not r.warmup)
        print(
            f"hybridgw bench: every request failed; first: {first.error}: {first.error_detail}",
            file=sys.stderr,
        )
        return 1
    return 1 if sink.stopped else 0
