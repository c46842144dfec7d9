"""`hybridgw size --traffic FILE | --ledger usage.sqlite3`: engine sizing from recorded traffic's ISL/OSL
histogram and the engine's performance model, optionally one recommendation per time-of-day window."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from policies.compiled import compile_policy
from policies.estimator import TokenPrice, hosted_price, litellm_price_table
from policies.perf_model import EngineModel
from policies.replay.inputs import add_traffic_args, exit_code_of, read_perf_model, read_policy, read_traffic
from policies.replay.sizing import TARGET_UTILISATION, Demand, Sizing, busy_rate, size_engine
from policies.replay.snippet import seasonal_snippet, sized_model_file
from policies.replay.traffic import TrafficRecord

Pricer = Callable[[TrafficRecord], float]  # what one request would cost hosted


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw size", description="Size engines from recorded traffic.")
    add_traffic_args(parser)
    parser.add_argument("--percentile", type=float, default=99.0, help="of ISL+OSL for the max context (default 99)")
    parser.add_argument("--ttft-slo", type=float, default=1.0, help="TTFT SLO in seconds (default 1.0)")
    parser.add_argument("--rate", type=float, help="requests/s to serve (default: the recording's busy-minute p95)")
    parser.add_argument("--engine", default="default", help="which engine of the performance model (default: its default)")
    parser.add_argument("--policy", type=Path, help="price the hosted spill at each alias's first hosted deployment")
    parser.add_argument("--spill-model", default="gpt-4o-mini", help="else price it as this hosted model")
    parser.add_argument("--windows", help="UTC hour windows, e.g. 0-8,8-20,20-24: one recommendation each")
    parser.add_argument("--snippet", action="store_true", help="print a policy deploying the recommendation")
    parser.add_argument("--engine-model", default="smollm2", help="the model the snippet's engines serve")
    parser.add_argument("--model-out", type=Path, help="write the sized engine's performance model here (for replay)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _pricer(args: argparse.Namespace) -> Pricer:
    table = litellm_price_table()
    if args.policy is not None:
        loaded = read_policy(args.policy, [])
        compiled = compile_policy(loaded.policy, table, loaded.source, loaded.absent_backends)

        def by_alias(record: TrafficRecord) -> float:
            found = compiled.hosted_deployment(record.model)
            return found[1].cost(record.prompt_tokens, record.output_tokens) if found else 0.0
        return by_alias
    price: TokenPrice | None = hosted_price(args.spill_model, {}, table)
    if price is None:
        raise ValueError(f"no price known for --spill-model {args.spill_model!r}")
    return lambda record: price.cost(record.prompt_tokens, record.output_tokens)


def _windows(text: str | None) -> list[tuple[int, int]]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        start, sep, end = part.partition("-")
        try:
            window = (int(start), int(end))
        except ValueError:
            raise ValueError(f"--windows takes UTC hours like 0-8,8-20, not {part!r}") from None
        if not sep or not 0 <= window[0] < window[1] <= 24:
            raise ValueError(f"--windows: {part!r} is not START-END with 0 ≤ START < END ≤ 24")
        out.append(window)
    return out


def _size(records: Sequence[TrafficRecord], args: argparse.Namespace, model: EngineModel, price: Pricer,
          hours: tuple[int, int] | None = None, scale: float = 1.0) -> Sizing:
    """One recommendation; a window's rate is its own busy minute, scaled as --rate scales the whole."""
    rate = args.rate if args.rate is not None and hours is None else \
        scale * busy_rate([r.time for r in records], hours=hours)
    demand = Demand(tuple(r.prompt_tokens for r in records), tuple(r.output_tokens for r in records),
                    tuple(price(r) for r in records), rate)
    return size_engine(demand, model, args.percentile, args.ttft_slo)


def render(label: str, s: Sizing) -> str:
    lines = [f"{label}:",
             f"  max context        {s.max_context} tokens (p{s.percentile:g} of ISL+OSL) → {s.local_share:.1%} of requests fit",
             f"  max batch          {s.max_batch} (est. TTFT {s.ttft_estimate_s:.3g}s)",
             (f"  KV pool            {s.kv_blocks} blocks, {s.kv_pool_bytes / 2**30:.2f} GiB, {s.kv_dtype} "
              f"({s.kv_bytes_per_token} B/token)"),
             (f"  replicas           {s.replicas} for {s.rate_per_s:.3g} req/s "
              f"({s.replica_requests_per_s:.3g} req/s each at ≤ {TARGET_UTILISATION:.0%} busy)"),
             f"  hosted spill       {s.spill_rate_per_s:.3g} req/s, ${s.spill_cost_usd_per_hour:,.4f}/hour"]
    lines += [f"  note: {n}" for n in s.notes]
    lines.append("  max context at other percentiles (local share, hosted spill $/hour):")
    lines += [f"    p{c.percentile:<5g} {c.max_context:>7} tokens  {c.local_share:7.1%}  ${c.spill_cost_usd_per_hour:,.4f}"
              for c in s.choices]
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if not 0 < args.percentile <= 100 or not args.ttft_slo > 0 or (args.rate is not None and args.rate < 0):
        raise ValueError("--percentile must be in (0, 100], --ttft-slo > 0 and --rate ≥ 0")
    model = read_perf_model(args.perf_model).engine(args.engine)
    windows = _windows(args.windows)
    price = _pricer(args)
    records = read_traffic(args)
    results = [("all traffic", _size(records, args, model, price))]
    overall = busy_rate([r.time for r in records])
    scale = args.rate / overall if args.rate is not None and overall > 0 else 1.0
    sized: list[tuple[int, int, Sizing]] = []
    for start, end in windows:
        inside = [r for r in records if start <= (r.time % 86400) / 3600 < end]
        if inside:
            sized.append((start, end, _size(inside, args, model, price, (start, end), scale)))
            results.append((f"{start:02d}:00–{end:02d}:00 UTC", sized[-1][2]))
        else:
            print(f"hybridgw size: no requests between {start:02d}:00 and {end:02d}:00 UTC", file=sys.stderr)
    if args.model_out is not None:
        args.model_out.write_text(sized_model_file(model, results[0][1]), encoding="utf-8")
    if args.snippet:
        alias = Counter(r.model for r in records).most_common(1)[0][0]
        print(seasonal_snippet(sized, results[0][1], alias, args.engine_model, args.spill_model), end="")
    elif args.json:
        print(json.dumps({label: asdict(s) for label, s in results}, indent=2))
    else:
        print(f"{len(records)} requests; engine model: {model.source}")
        print("\n".join(render(label, s) for label, s in results))
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return exit_code_of("size", lambda: _run(args))
