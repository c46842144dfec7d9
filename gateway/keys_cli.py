"""`hybridgw keys create --team T | list | revoke KEY_ID`: manage API keys in the data dir's store.
`create` prints the new key once on stdout; only its hash is stored."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.key_store import KeyStore
from gateway.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridgw keys", description="Manage hybridgw API keys.")
    parser.add_argument("--data-dir", type=Path, help="default: $HYBRIDGW_DATA_DIR or ~/.hybridgw")
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


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env(data_dir=args.data_dir)
    store = KeyStore.in_data_dir(settings.data_dir)
    try:
        if args.action == "create":
            if not args.team.strip():
                print("hybridgw keys: --team must not be empty", file=sys.stderr)
                return 2
            key, info = store.create(args.team.strip(), args.name)
            print(key)
            print(f"created key {info.key_id} for team {info.team!r}; it is shown only now", file=sys.stderr)
        elif args.action == "list":
            print(f"{'key_id':<10} {'team':<20} {'name':<16} {'created':<19} revoked")
            for row in store.list(include_revoked=args.all):
                print(f"{row.key_id:<10} {row.team:<20} {row.name:<16} {_when(row.created_at):<19} "
                      f"{_when(row.revoked_at)}")
        elif args.action == "revoke":
            if not store.revoke(args.key_id):
                print(f"hybridgw keys: no active key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
    finally:
        store.close()
    return 0
