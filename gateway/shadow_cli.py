"""`hybridgw shadow export --team T --out FILE [--format jsonl|csv]`: a team's shadow pairs from the store
the gateway writes (Redis with REDIS_URL / --redis-url, else the data dir's SQLite; reading either is an
operator's act, like `hybridgw keys`). `csv` is RouteLLM's response format — `prompt`, then the weak and
the strong backend's correctness, left empty for the team or a judge to fill — plus both answers, ready
for `python -m policies.quality.train --labels FILE.csv` once labelled."""
from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from gateway.settings import Settings, SettingsError
from gateway.shadow_wiring import pair_store_opener
from observability.shadow_pairs import ShadowPair


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw shadow", description="Shadow traffic's pairs of answers.")
    parser.add_argument("--data-dir", type=Path, help="default: $HYBRIDGW_DATA_DIR or ~/.hybridgw")
    parser.add_argument("--redis-url", help="pairs in Redis (default: $REDIS_URL)")
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="write a team's pairs (oldest first)")
    export.add_argument("--team", required=True)
    export.add_argument("--out", type=Path, required=True, help="the file to write ('-': stdout)")
    export.add_argument("--format", choices=["jsonl", "csv"], default=None,
                        help="default: by the file's suffix (.csv → csv), else jsonl")
    export.add_argument("--limit", type=int, default=None, help="only the newest N pairs")
    count = sub.add_parser("count", help="how many pairs a team has")
    count.add_argument("--team", required=True)
    return parser


def csv_rows(pairs: Sequence[ShadowPair]) -> list[list[str]]:
    """RouteLLM's columns (prompt, weak, strong: True/False to fill), then the answers and the ids."""
    from policies.quality.difficulty import prompt_text  # numpy: only for this format

    if not pairs:
        return [["prompt", "weak", "strong"]]
    weak, strong = pairs[-1].backends
    header = ["prompt", weak, strong, f"{weak}_answer", f"{strong}_answer", "request_id", "difficulty"]
    rows = [header]
    for pair in pairs:
        w, s = pair.answer_of(weak), pair.answer_of(strong)
        if w is None or s is None:  # the policy's pair changed since: not this file's columns
            continue
        difficulty = "" if pair.difficulty is None else f"{pair.difficulty:.4f}"
        rows.append([prompt_text({"messages": pair.messages}), "", "", w.text, s.text, pair.request_id, difficulty])
    return rows


def _write(pairs: list[ShadowPair], out: Path, fmt: str) -> None:
    handle = sys.stdout if str(out) == "-" else out.open("w", encoding="utf-8", newline="")
    try:
        if fmt == "csv":
            csv.writer(handle).writerows(csv_rows(pairs))
        else:
            for pair in pairs:
                handle.write(orjson.dumps(pair.to_dict()).decode() + "\n")
    finally:
        if handle is not sys.stdout:
            handle.close()


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a pair store that went away raises: sqlite3's errors, and Redis's where redis is loaded
    (only with a Redis URL: the embedded case never imports it)."""
    redis_errors = sys.modules.get("redis.exceptions")
    return (sqlite3.Error,) if redis_errors is None else (sqlite3.Error, redis_errors.RedisError)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides = {"data_dir": args.data_dir, "redis_url": args.redis_url}
    try:
        settings = Settings.from_env(os.environ, **{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:  # a malformed number in the environment
        print(f"hybridgw shadow: {exc}", file=sys.stderr)
        return 1
    try:
        store = pair_store_opener(settings)()
    except Exception as exc:
        print(f"hybridgw shadow: cannot open the pair store: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "count":
            print(store.count(args.team))
            return 0
        pairs = store.pairs(args.team, args.limit)
        fmt = args.format or ("csv" if args.out.suffix.lower() == ".csv" else "jsonl")
        _write(pairs, args.out, fmt)
    except _store_errors() as exc:  # the store went away (or never answered)
        print(f"hybridgw shadow: the pair store is unavailable: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # --out in a missing folder, a full disk ...
        print(f"hybridgw shadow: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(f"wrote {len(pairs)} pairs of team {args.team!r} to {args.out}", file=sys.stderr)
    return 0

