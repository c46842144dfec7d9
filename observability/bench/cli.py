"""`hybridgw bench URL`: read the options, build the workload, run it (once, or a sweep of rising
load), print the summary and write results.json, requests.csv and report.html; bad input ends
with one clear line and whatever was measured saved, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from observability.bench import options, profile_cli, workload
from observability.bench.arrivals import Load, OpenLoop
from observability.bench.client import Client, Sent, Target
from observability.bench.metrics import Slo, summarize
from observability.bench.output import Progress, client_line, render_csv, render_json, render_table
from observability.bench.prompts import PromptBuilder, TokenizerMismatch
from observability.bench.records import RequestRecord
from observability.bench.report_html import render_html
from observability.bench.runner import RunSpec, Sink, run
from observability.bench.server_info import ServerInfoError, first_model, server_counter
from observability.bench.sweep import Level, render_sweep_table, saturation, sweep_plots


@dataclass(frozen=True)
class Plan:
    target: Target
    model: str
    headers: dict[str, str]
    warmup: Sequence[Sent]
    measured: Sequence[Sent]  # requests × levels, each built when it is sent
    slo: Slo


def main(argv: list[str]) -> int:
    p = options.parser()
    profile_cli.add_options(p)
    args = p.parse_args(argv)
    if args.profile:
        return profile_cli.main(args)
    profile_cli.drop_options(args)  # a load test's settings (results.json) do not carry them
    try:
        kind, loads = options.loads(args)
        plan = _plan(args, len(loads))
    except options.UsageError as exc:
        print(f"hybridgw bench: {exc}", file=sys.stderr)
        return 2
    except ServerInfoError as exc:
        print(f"hybridgw bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hybridgw bench: interrupted before the first request; nothing to save", file=sys.stderr)
        return 130
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sink, levels = (
        _sweep(args, plan, kind, loads) if kind else (_measure(args, plan, loads[0], plan.warmup, 0), [])
    )
    settings = options.settings(args, plan.model, loads)
    settings["client_cpu_s"], settings["client_wall_s"] = (
        time.process_time() - cpu0,
        time.perf_counter() - wall0,
    )
    return _finish(args, sink, settings, plan.slo, levels)


def _plan(args: argparse.Namespace, num_levels: int) -> Plan:
    spec, slo, headers = options.spec(args), options.slo(args.slo), options.headers(args.header)
    try:
        target = Target.parse(args.url, args.endpoint)
    except ValueError as exc:
        raise options.UsageError(str(exc)) from None
    model = args.model or first_model(target, headers, spec.teams[0].api_key)
    plans = workload.build_plans(
        spec, args.warmup + args.requests * num_levels, _builder(args, target, headers, spec, model)
    )

    def sent(i: int) -> Sent:
        p = plans[i]
        base = RequestRecord(p.index, p.pattern, p.team.name, p.isl, p.osl, 0.0, 0.0, tenant=p.tenant)
        return Sent(workload.request_body(p, model, args.endpoint, spec.ignore_eos), p.team.api_key, base)

    sents = workload.Lazy(sent, 0, len(plans))
    return Plan(target, model, headers, sents[: args.warmup], sents[args.warmup :], slo)


def _builder(
    args: argparse.Namespace, target: Target, headers: dict[str, str], spec: workload.WorkloadSpec, model: str
) -> PromptBuilder:
    if args.tokenizer != "server":
        return PromptBuilder.tiktoken(args.tokenizer)
    try:
        return PromptBuilder("server", server_counter(target, headers, spec.teams[0].api_key, model))
    except TokenizerMismatch as exc:
        raise ServerInfoError(f"{exc}; use --tokenizer o200k_base") from None


def _measure(args: argparse.Namespace, plan: Plan, load: Load, warmup: Sequence[Sent], level: int) -> Sink:
    """One run at one load; Ctrl-C ends it with what finished so far."""
    measured = plan.measured[level * args.requests : (level + 1) * args.requests]
    progress = Progress(len(measured), enabled=not args.no_progress)
    sink = Sink(progress)
    spec = RunSpec(load, args.duration, args.seed + level)
    try:
        asyncio.run(_drive(Client(plan.target, plan.headers, args.timeout), warmup, measured, spec, sink))
    except KeyboardInterrupt:
        sink.stopped = "interrupted"
    finally:
        progress.close()
    return sink


async def _drive(
    client: Client, warmup: Sequence[Sent], measured: Sequence[Sent], spec: RunSpec, sink: Sink
) -> None:
    """The run; SIGTERM (a `timeout`, a CI job cancelled) ends it like Ctrl-C, results kept."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None

    def terminate() -> None:
        sink.stopped = "terminated"
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        await run(client, warmup, measured, spec, sink)
    except asyncio.CancelledError:
        if sink.stopped != "terminated":
            raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        client.close()  # inside the loop: the transports need it to close


def _sweep(args: argparse.Namespace, plan: Plan, kind: str, loads: list[Load]) -> tuple[Sink, list[Level]]:
    """Level after level until one is saturated; every level's records, laid end to end in time."""
    combined, levels, offset = Sink(), [], 0.0
    for i, load in enumerate(loads):
        sink = _measure(args, plan, load, plan.warmup if i == 0 else [], i)
        records = [_shifted(r, offset) for r in sink.records]
        combined.records += records
        offset = max((r.end_s for r in combined.records), default=offset)
        value = load.rate if isinstance(load, OpenLoop) else float(load.concurrency)
        summary = summarize(sink.records, plan.slo)
        levels.append(
            Level(kind, value, summary, saturation(kind, value, summary, levels[-1] if levels else None))
        )
        lines = render_sweep_table(levels).splitlines()
        print("\n".join(lines if i == 0 else lines[-1:]), file=sys.stderr, flush=True)
        if sink.stopped or levels[-1].saturated:
            combined.stopped = sink.stopped
            break
    return combined, levels


def _shifted(r: RequestRecord, offset: float) -> RequestRecord:
    return replace(
        r, send_s=r.send_s + offset, end_s=r.end_s + offset, chunk_s=tuple(t + offset for t in r.chunk_s)
    )


def _finish(
    args: argparse.Namespace, sink: Sink, settings: dict[str, Any], slo: Slo, levels: list[Level]
) -> int:
    records = sorted(sink.records, key=lambda r: r.index)
    summary = summarize(records, slo)
    out = args.out or Path("hybridgw-bench") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    sweep_table = render_sweep_table(levels) if levels else ""
    sys.stdout.write(
        sweep_table + render_table(summary) + client_line(settings["client_cpu_s"], settings["client_wall_s"])
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_bytes(render_json(settings, summary, records, sink.stopped, levels))
        (out / "requests.csv").write_text(render_csv(records), encoding="utf-8")
        html = render_html(settings, summary, records, sweep_plots(levels), sweep_table)
        (out / "report.html").write_text(html, encoding="utf-8")
    except OSError as exc:
        print(f"hybridgw bench: cannot write the results to {out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}/results.json, requests.csv, report.html", file=sys.stderr)
    if sink.stopped:
        print(f"hybridgw bench: stopped early: {sink.stopped} (partial results saved)", file=sys.stderr)
    measured = [r for r in records if not r.warmup]
    if measured and not summary.ok:
        first = measured[0]
        print(
            f"hybridgw bench: every request failed; first: {first.error}: {first.error_detail}",
            file=sys.stderr,
        )
        return 1
    return 1 if sink.stopped else 0
