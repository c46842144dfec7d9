"""`hybridgw policy check FILE…` and `hybridgw policy explain FILE --request req.json [--state s.json]`:
validate policy files, and show the facts and the decision for one request without sending it."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from policies.calibration import Calibration
from policies.checks import dotted, policy_warnings
from policies.compiled import CompiledPolicy, compile_policy
from policies.decide import decide
from policies.decision import RequestFacts, RouteDecision
from policies.errors import PolicyError, RoutingError
from policies.estimator import litellm_price_table
from policies.facts import build_facts
from policies.live import LiveState
from policies.loader import LoadedPolicy, environ_with, load_policy_file
from policies.quality.lazy import LazyQuality
from policies.state_file import MONO_NOW, ExplainRequest, parse_request, parse_state, parse_time
from policies.tokens import TokenCounter


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw policy", description="Check or explain a policy file.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate policy files; exit 1 if any is invalid")
    check.add_argument("files", nargs="+", type=Path)
    explain = sub.add_parser("explain", help="print the facts and the decision for one request; sends nothing")
    explain.add_argument("file", type=Path)
    explain.add_argument("--request", type=Path, required=True, help="JSON: a request body, or {body, team, headers}")
    explain.add_argument("--state", type=Path, help="JSON: engines / health / reserved_blocks / time")
    explain.add_argument("--team", help="overrides the request file's team")
    explain.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    explain.add_argument("--time", help="wall time for time-of-day rules (ISO-8601); default: now")
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    for p in (check, explain):
        p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                       help="set an environment variable for requires_env / ${VAR} (repeatable)")
    return parser


def _summary(loaded: LoadedPolicy) -> str:
    p = loaded.policy
    text = f"{loaded.source}: ok — {len(p.backends)} backends, {len(p.models)} models, {len(p.rules)} rules"
    if loaded.absent_backends:
        text += f" (absent: {loaded.absent_why()})"
    return text


def _check(args: argparse.Namespace) -> int:
    env = environ_with(args.env)
    failed = 0
    for path in args.files:
        try:
            loaded = load_policy_file(path, env)
            print(_summary(loaded))
            for loc, message in policy_warnings(loaded.policy, litellm_price_table()):
                print(f"{loaded.source}: warning: {dotted(loc)}: {message}", file=sys.stderr)
        except PolicyError as exc:
            print(exc.message, file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the {what} file: {exc}") from None


def _read_state(path: Path, stale_after_s: float) -> tuple[LiveState, float | None]:
    data = _read_json(path, "state")
    try:
        return parse_state(data, stale_after_s)
    except ValueError as exc:  # what the file holds: named with it
        raise ValueError(f"{path}: {exc}") from None


def _explain_inputs(args: argparse.Namespace, loaded: LoadedPolicy) -> tuple[ExplainRequest, LiveState, float]:
    request = parse_request(_read_json(args.request, "request"))
    headers = dict(request.headers)
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep:
            raise ValueError(f"--header takes NAME:VALUE, not {item!r}")
        headers[name.strip()] = value.strip()
    request = ExplainRequest(request.body, args.team or request.team, headers, request.over_budget)
    stale = loaded.policy.health.stale_after_s
    live, wall = (_read_state(args.state, stale) if args.state
                  else (LiveState(MONO_NOW, stale_after_s=stale), None))
    if args.time:
        wall = parse_time(args.time)
    return request, live, time.time() if wall is None else wall


def _explain(args: argparse.Namespace) -> int:
    loaded = load_policy_file(args.file, environ_with(args.env))
    request, live, wall = _explain_inputs(args, loaded)
    compiled = compile_policy(loaded.policy, litellm_price_table(), loaded.source, loaded.absent_backends,
                              perf_model=loaded.perf_model)
    quality = LazyQuality()
    quality.use(compiled.difficulty_weights)
    facts = build_facts(compiled, request.body, request.team, live, counter=TokenCounter(),
                        calibration=Calibration(), headers=request.headers, over_budget=request.over_budget,
                        now_unix=wall, difficulty=quality, category=quality.category)
    decision = decide(compiled, facts, live)
    # Shown even when no rule uses them (then the gateway would not compute them): what a rule would see.
    difficulty = facts.difficulty if compiled.uses_difficulty else quality(request.body)
    category = facts.category if compiled.uses_category else quality.category(request.body, loaded.policy.categories)
    if args.json:
        print(json.dumps({"facts": asdict(facts), "decision": asdict(decision), "difficulty": difficulty,
                          "category": category}, indent=2))
    else:
        print(render(loaded, facts, live, decision, _prompt_lines(compiled, difficulty, category)))
    return 0


def _per_backend(values: dict[str, Any], fmt: str = "{}") -> str:
    return ", ".join(f"{k}={fmt.format(v)}" for k, v in values.items()) or "-"


def _prompt_lines(compiled: CompiledPolicy, difficulty: float | None, category: str | None) -> list[str]:
    unused = " (no rule uses it: the gateway would not compute it)"
    shown = "- (not scored: the model could not load, see the log)" if difficulty is None else (
        f"{difficulty:.3f} (P(local model not good enough)){'' if compiled.uses_difficulty else unused}")
    lines = [f"  difficulty              {shown}"]
    if compiled.policy.categories:
        lines.append(f"  category                {category or '-'}{'' if compiled.uses_category else unused}")
    return lines


def render(loaded: LoadedPolicy, facts: RequestFacts, live: LiveState, decision: RouteDecision,
           prompt_lines: list[str] | None = None) -> str:
    """The human-readable explanation: facts, live state, decision."""
    lines = [_summary(loaded), "", "facts:",
             f"  team                    {facts.team}   model {facts.model_alias}   stream {facts.stream}",
             f"  prompt_tokens           {facts.prompt_tokens} ({facts.encoding})",
             f"  expected_output_tokens  {facts.expected_output_tokens} ({facts.output_source})",
             f"  prompt_tokens by target {_per_backend(facts.prompt_tokens_by_backend)}",
             f"  kv_bytes                {_per_backend(facts.kv_bytes)}",
             f"  blocks_needed           {_per_backend(facts.blocks_needed)}",
             f"  est_cost_usd            {_per_backend(facts.est_cost_usd, '{:.6g}')}",
             f"  headers                 {_per_backend(facts.headers)}",
             f"  tags                    {_per_backend(facts.tags)}",
             f"  over_budget             {facts.over_budget}",
             *(prompt_lines or []),
             f"  time                    {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(facts.now))}",
             "", "state:"]
    for name in loaded.policy.backends:
        health = live.health_of(name)
        line = f"  {name:<22}  circuit {health.state}"
        if name in live.engines:
            snap = live.engines[name]
            free = live.free_blocks(name)
            line += (f", {'fresh' if free is not None else 'STALE'} state: {snap.num_blocks_free}/{snap.num_blocks_total}"
                     f" blocks free ({free if free is not None else '?'} after reservations), "
                     f"{snap.num_running} running, {snap.num_waiting} waiting")
        elif loaded.policy.backends[name].state_source != "none":
            line += ", state unknown"
        if name in live.teams:  # team fairness: who holds it and who wants it
            teams = live.teams[name]
            line += "; teams " + ", ".join(f"{t} holds {teams.held.get(t, 0)}, wants {teams.wanting.get(t, '-')}"
                                           for t in sorted({*teams.held, *teams.wanting}))
        lines.append(line)
    targets = ", ".join(f"{t.backend} ({t.model})" for t in decision.targets) or "none"
    lines += ["", "decision:", f"  rule      {decision.rule} ({decision.strategy})", f"  targets   {targets}",
              f"  reason    {decision.reason}"]
    if decision.refusal:
        lines.append(f"  refusal   {decision.refusal}, Retry-After {math.ceil(decision.retry_after_s)}s"
                     if decision.retry_after_s else f"  refusal   {decision.refusal}")
    if decision.shadow_rule:
        shadow = ", ".join(t.backend for t in decision.shadow_targets) or "none"
        lines.append(f"  shadow    {decision.shadow_rule} → {shadow} (not applied): {decision.shadow_reason}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _check(args) if args.command == "check" else _explain(args)
    except PolicyError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    except (RoutingError, ValueError) as exc:
        print(f"hybridgw policy {args.command}: {exc}", file=sys.stderr)
        return 2
