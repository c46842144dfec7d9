"""Reading the replay's and sizing's inputs from files and flags: policies (every backend present,
as if its requires_env were set), the performance model file, the traffic, and time windows."""
from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from policies.errors import PolicyError
from policies.loader import LoadedPolicy, environ_with, load_policy, read_policy_text
from policies.perf_model import PerfModel, PerfModelError, perf_model_from_mapping
from policies.perf_model_file import read_perf_model_file
from policies.replay.traffic import TrafficError, TrafficRecord, read_jsonl, read_ledger
from policies.yaml_source import read_yaml

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_traffic_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--traffic", type=Path, help="JSONL: one request per line (see docs/replay.md)")
    source.add_argument("--ledger", type=Path, help="the usage ledger's SQLite file (e.g. ~/.hybridgw/usage.sqlite3)")
    parser.add_argument("--since", default="1d", help="ledger window start: 7d, 12h, 90m, unix seconds or ISO-8601")
    parser.add_argument("--until", default="0s", help="ledger window end (default: now)")
    parser.add_argument("--team", action="append", default=[], help="only these teams (repeatable)")
    parser.add_argument("--perf-model", type=Path, help="YAML/JSON performance model (default: the built-in one)")


def parse_when(text: str, now: float) -> float:
    """`7d` / `12h` / `90m` / `30s` ago, unix seconds, or an ISO-8601 time (UTC unless it says)."""
    match = _AGO.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"cannot read the time {text!r}: use 7d, 12h, 90m, unix seconds or ISO-8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def read_traffic(args: argparse.Namespace) -> list[TrafficRecord]:
    if args.traffic is not None:
        records = read_jsonl(args.traffic)
        return [r for r in records if r.team in args.team] if args.team else records
    now = time.time()
    return read_ledger(args.ledger, parse_when(args.since, now), parse_when(args.until, now), args.team)


def read_perf_model(path: Path | None) -> PerfModel:
    return perf_model_from_mapping({}) if path is None else read_perf_model_file(path)


def replay_environ(text: str, filename: str, pairs: list[str]) -> Mapping[str, str]:
    """The environment to load a policy in: this one, --env pairs, and every requires_env the file
    names set (the replay models each backend the policy can have, whatever is configured here)."""
    env = environ_with(pairs)
    data, _ = read_yaml(text, filename, env)
    backends = data.get("backends") if isinstance(data, dict) else None
    for spec in (backends or {}).values():
        needed = spec.get("requires_env") if isinstance(spec, dict) else None
        if isinstance(needed, str) and not env.get(needed):
            env[needed] = "set-for-replay"
    return env


def read_policy(path: Path, pairs: list[str]) -> LoadedPolicy:
    text = read_policy_text(path)
    return load_policy(text, str(path), replay_environ(text, str(path), pairs))


__all__ = ["TrafficError", "add_traffic_args", "parse_when", "read_perf_model", "read_policy", "read_traffic"]


def exit_code_of(command: str, run: Callable[[], int]) -> int:
    """`run()`'s exit code; a bad input (policy, traffic, model file, argument, file) is one line on
    stderr and exit code 2, never a traceback. Shared by `hybridgw replay` and `hybridgw size`."""
    try:
        return run()
    except PolicyError as exc:
        print(exc.message, file=sys.stderr)
        return 2
    except (TrafficError, PerfModelError, ValueError, OSError) as exc:
        print(f"hybridgw {command}: {exc}", file=sys.stderr)
        return 2
