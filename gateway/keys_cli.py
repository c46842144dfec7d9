"""`hybridgw keys create --team T | list | revoke KEY_ID`: manage API keys in the store the gateway
uses (Redis with REDIS_URL / --redis-url, else the data dir's SQLite). `create` prints the new key
once on stdout (only its hash is stored) and only for a team the policy serves."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.assembly import open_key_store
from gateway.auth import new_key_refusal, served_team
from gateway.key_store import KeyStorage, KeyStoreUnavailable
from gateway.settings import Settings
from policies.errors import PolicyError
from policies.loader import load_default_policy, load_policy_file
from policies.schema import Policy


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw keys", description="Manage hybridgw API keys.")
    parser.add_argument("--data-dir", type=Path, help="default: $HYBRIDGW_DATA_DIR or ~/.hybridgw")
    parser.add_argument("--redis-url", help="keys shared by replicas in Redis (default: $REDIS_URL)")
    parser.add_argument("--config", type=Path,
                        help="the gateway's policy, whose teams keys may be made for "
                             "(default: $HYBRIDGW_POLICY, else the embedded default policy)")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key for a team and print it once")
    create.add_argument("--team", required=True)
    create.add_argument("--name", default="")
    listing = sub.add_parser("list", help="list keys (ids and teams, never the keys)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _create(store: KeyStorage, policy: Policy, team: str, name: str) -> int:
    refusal = new_key_refusal(team, policy) if team else "--team must not be empty"
    if refusal is not None:
        print(f"hybridgw keys: {refusal}", file=sys.stderr)
        return 2
    key, info = store.create(team, name)
    print(key)
    served = served_team(team, policy)
    note = "" if served == team else f" (not in the policy: served as team {served!r})"
    print(f"created key {info.key_id} for team {info.team!r}{note}; it is shown only now", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, store: KeyStorage, settings: Settings) -> int:
    if args.action == "create":
        loaded = load_default_policy() if settings.policy_file is None else load_policy_file(settings.policy_file)
        return _create(store, loaded.policy, args.team.strip(), args.name)
    if args.action == "list":
        print(f"{'key_id':<10} {'team':<20} {'name':<16} {'created':<19} revoked")
        for row in store.list(include_revoked=args.all):
            print(f"{row.key_id:<10} {row.team:<20} {row.name:<16} {_when(row.created_at):<19} "
                  f"{_when(row.revoked_at)}")
        return 0
    if not store.revoke(args.key_id):
        print(f"hybridgw keys: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env(data_dir=args.data_dir, redis_url=args.redis_url, policy_file=args.config)
    try:
        store = open_key_store(settings)
    except ValueError as exc:  # a malformed REDIS_URL
        print(f"hybridgw keys: {exc}", file=sys.stderr)
        return 2
    try:
        return _run(args, store, settings)
    except PolicyError as exc:
        print(f"hybridgw keys: {exc.message}", file=sys.stderr)
        return 2
    except KeyStoreUnavailable as exc:
        print(f"hybridgw keys: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
