"""`hybridgw replay POLICY… --traffic FILE | --ledger usage.sqlite3`: what each policy would have done with
recorded traffic — cost, backend split, TTFT/E2E, SLO attainment, KV and queue — side by side."""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from policies.compiled import compile_policy
from policies.estimator import litellm_price_table
from policies.loader import LoadedPolicy
from policies.perf_model import PerfModel
from policies.perf_model_file import with_overrides
from policies.replay.engine_args import with_burst
from policies.replay.engine_share import parse_shares, with_shares
from policies.replay.inputs import add_traffic_args, exit_code_of, read_perf_model, read_policy, read_traffic
from policies.replay.keys import KEY_STORE_FILE, read_key_store
from policies.replay.parallel import in_processes
from policies.replay.poll_clock import POLL_CLOCKS
from policies.replay.recording_fit import as_model_file, calibrated
from policies.replay.render import report_html, table, to_json
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.state_poll import parse_state_polls, with_state_polls
from policies.replay.summary import Summary, recorded_summary, summarize
from policies.replay.traffic import TrafficError, TrafficRecord


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw replay",
                                     description="Replay recorded traffic against policies on a simulated clock.")
    parser.add_argument("policies", nargs="+", type=Path, help="policy files to compare")
    add_traffic_args(parser)
    parser.add_argument("--ttft-slo", type=float, help="TTFT SLO in seconds (default: each team's, else the policy's tightest)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hosted response times (default 0)")
    parser.add_argument("--json", type=Path, help="write the summaries as JSON here ('-': stdout, no table)")
    parser.add_argument("--html", type=Path, help="write the what-if report (HTML with inline SVG) here")
    parser.add_argument("--keys", type=Path, help="the gateway's key store (keys.sqlite3 or its data dir): limits stored "
                        "with the recording's keys apply too (default: keys.sqlite3 beside --ledger, when there)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit each engine's step times to what it served in the --ledger window (its speed under "
                        "the load it had; docs/replay.md) instead of --perf-model's alone")
    parser.add_argument("--calibrate-out", type=Path, metavar="FILE",
                        help="with --calibrate: also write the fitted model here (JSON), to replay another window "
                        "with --perf-model FILE (a check on traffic it was not fitted to)")
    parser.add_argument("--engine-share", action="append", default=[], metavar="NAME=SHARE",
                        help="the share of a core engine NAME's steps got in this window (CPU ÷ wall seconds of its "
                        "steps, /v1/engine/state's totals): with --calibrate recorded in the fitted model; otherwise "
                        "the model's step times (fitted at its own recorded share) are carried to this one")
    parser.add_argument("--poll-clock", nargs="?", const="period", choices=POLL_CLOCKS, default="",
                        help="the gateway polls each engine on a clock of its own, every arrival seeing the last poll's "
                        "state, as the real one does: every state_poll_s of the model (--calibrate fits it from the "
                        "ledger's engine views; else the policy's poll_interval_s), or at the polls the views show "
                        "('recorded': where the traffic is a --ledger whose records carry their engine views; an "
                        "engine none show is polled by period)")
    parser.add_argument("--state-poll", action="append", default=[], metavar="NAME=SECONDS",
                        help="the gateway polled engine NAME every SECONDS in this window (over the model's or the "
                        "fitted state_poll_s; e.g. a held-out run's own period): implies --poll-clock (period) "
                        "unless that is given")
    parser.add_argument("--burst-batched-tokens", type=int, metavar="N",
                        help="the engines' burst budget (the engine's --burst-batched-tokens) over the "
                        "model's, which is 256 (the engine's default) where its file does not say; a ledger "
                        "recorded before 2026-12-02 had none: 0. A policy's engine_args still set their own")
    parser.add_argument("--jobs", type=int, default=1,
                        help="replay up to this many policies at once, one process each (wall time, not CPU)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the policies' ${VAR} (requires_env backends are always present)")
    return parser


def engine_backends(loaded: LoadedPolicy) -> list[str]:
    return sorted(n for n, spec in loaded.policy.backends.items() if spec.state_source != "none")  # as compile_policy


def _engine_models(args: argparse.Namespace, perf: PerfModel, first: LoadedPolicy, shares: Mapping[str, float],
                   traffic: Sequence[TrafficRecord]) -> PerfModel:
    """`perf` fitted to the ledger window (--calibrate, its engines' shares recorded; --calibrate-out writes
    it), or carried to the window's engine shares (--engine-share alone), or as it is."""
    engines = engine_backends(first)
    if args.burst_batched_tokens is not None:  # before the fit: it counts the passes the burst packed
        perf = with_burst(with_overrides(perf, first.perf_model), args.burst_batched_tokens, engines)
    if args.calibrate:
        if args.ledger is None:
            raise ValueError("--calibrate fits the engines to the requests they served: it needs --ledger")
        hosted = [name for name in first.policy.backends if name not in engines]
        perf = with_shares(calibrated(with_overrides(perf, first.perf_model), engines, hosted, traffic), shares, True)
        if args.calibrate_out is not None:
            args.calibrate_out.write_text(json.dumps(as_model_file(perf, engines, hosted), indent=2) + "\n")
    elif args.calibrate_out is not None:
        raise ValueError("--calibrate-out writes what --calibrate fitted: it needs --calibrate")
    elif shares:  # the first policy's engine models, as --calibrate fits them, carried to this window's shares
        perf = with_shares(with_overrides(perf, first.perf_model), shares, fitted=False)
    return perf


def _keys_path(args: argparse.Namespace) -> Path | None:
    if args.keys is None and args.ledger is not None and (args.ledger.parent / KEY_STORE_FILE).is_file():
        return args.ledger.parent / KEY_STORE_FILE  # the gateway's data dir holds both
    return args.keys


def _replay_all(args: argparse.Namespace, loaded: Sequence[LoadedPolicy], traffic: Sequence[TrafficRecord],
                setup: ReplaySetup) -> tuple[list[Summary], dict[str, float], dict[str, float]]:
    """Each policy replayed (up to --jobs at once): its summary, and the wall and CPU seconds it took."""
    def one(path: Path, policy: LoadedPolicy) -> Callable[[], tuple[Summary, float, float]]:
        def run() -> tuple[Summary, float, float]:
            started, cpu_started = time.perf_counter(), time.process_time()
            outcomes = replay(policy, traffic, setup)
            compiled = compile_policy(policy.policy, setup.price_table, policy.source, policy.absent_backends)
            summary = summarize(str(path), compiled, traffic, outcomes, setup.perf, args.ttft_slo)
            return summary, round(time.perf_counter() - started, 3), round(time.process_time() - cpu_started, 3)
        return run

    done = in_processes([one(path, policy) for path, policy in zip(args.policies, loaded)], args.jobs)
    timings = {str(path): wall for path, (_, wall, _) in zip(args.policies, done)}
    cpu = {str(path): used for path, (_, _, used) in zip(args.policies, done)}
    return [summary for summary, _, _ in done], timings, cpu


def _write(args: argparse.Namespace, summaries: Sequence[Summary], meta: Mapping[str, Any]) -> None:
    """The summaries as --json/--html ask, and the table on stdout unless the JSON goes there."""
    if args.json is not None:
        text = to_json(summaries, meta)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text + "\n", encoding="utf-8")
    if str(args.json) != "-":
        timings, cpu = meta["replay_seconds"], meta["replay_cpu_seconds"]
        print(table(summaries))
        print(f"\n{meta['requests']} requests over {meta['window_s']:.0f} s; replayed in "
              + ", ".join(f"{t:.2f} s ({c:.2f} s CPU)" for t, c in zip(timings.values(), cpu.values())))
    if args.html is not None:
        args.html.write_text(report_html(summaries, meta), encoding="utf-8")


def _run(args: argparse.Namespace) -> int:
    if args.ttft_slo is not None and not args.ttft_slo > 0:
        raise ValueError(f"--ttft-slo must be > 0, got {args.ttft_slo}")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be ≥ 1, got {args.jobs}")
    perf = read_perf_model(args.perf_model)
    loaded = [read_policy(path, args.env) for path in args.policies]  # all checked before any replay
    shares = parse_shares(args.engine_share, engine_backends(loaded[0]))
    polls = parse_state_polls(args.state_poll, engine_backends(loaded[0]))
    traffic = read_traffic(args)
    perf = with_state_polls(_engine_models(args, perf, loaded[0], shares, traffic), polls)
    poll_clock = args.poll_clock or ("period" if polls else "")
    if args.team and not traffic:
        raise TrafficError(f"no requests of team(s) {', '.join(args.team)} to replay")
    prices = litellm_price_table()
    keys_path = _keys_path(args)
    keys = read_key_store(keys_path) if keys_path is not None else {}
    setup = ReplaySetup(perf, prices, args.seed, keys=keys, poll_clock=poll_clock)
    summaries, timings, cpu = _replay_all(args, loaded, traffic, setup)
    first = loaded[0]  # what actually happened, when the traffic comes from the ledger
    baseline = recorded_summary(compile_policy(first.policy, prices, first.source, first.absent_backends),
                                traffic, perf, args.ttft_slo)
    summaries = ([baseline] if baseline is not None else []) + summaries
    meta = {"traffic": str(args.traffic or args.ledger), "requests": len(traffic),
            "window_s": round(traffic[-1].time - traffic[0].time, 3), "seed": args.seed, "poll_clock": poll_clock,
            "key_store": str(keys_path) if keys_path is not None else None,
            "engine_model": perf.default_engine.source,
            "models": {name: (perf.engine(name) if name in engine_backends(first) else perf.hosted_model(name)).source
                       for name in first.policy.backends}, "hosted_model": perf.default_hosted.source,
            "replay_seconds": timings, "replay_cpu_seconds": cpu}
    _write(args, summaries, meta)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return exit_code_of("replay", lambda: _run(args))
