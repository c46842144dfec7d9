"""`hybridgw keys create | update | rotate | revoke | list | info`: manage virtual keys in the store
the gateway uses (Redis with REDIS_URL / --redis-url, else the data dir's SQLite). `create` and
`rotate` print the new key once on stdout (only its hash is stored); keys only for teams the policy
serves, with the same fields and checks as the admin API (gateway/key_requests.py)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import orjson
from pydantic import ValidationError

from gateway.assembly import open_key_store
from gateway.auth import new_key_refusal, served_team
from gateway.catalog import AliasEntry, Catalog
from gateway.data_dir import PRIVATE_UMASK, secure_data_dir
from gateway.errors import InvalidRequest
from gateway.key_requests import KeyBudgetBody, KeyLimitsBody, KeyUpdateBody, apply, check_spec
from gateway.key_spec import KeySpec, parse_duration
from gateway.key_store import KeyRow, KeyStorage, KeyStoreUnavailable
from gateway.report_prices import load_with_every_backend
from gateway.settings import Settings, SettingsError
from policies.decision import Target
from policies.errors import PolicyError
from policies.schema import Policy


def _spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name")
    parser.add_argument("--model", action="append", dest="models", metavar="ALIAS",
                        help="an alias the key may use (repeat; default: every alias of its team)")
    parser.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h, 3600 (from now)")
    parser.add_argument("--rpm", type=int, help="requests per minute of this key")
    parser.add_argument("--tpm", type=int, help="tokens per minute of this key")
    parser.add_argument("--usd-per-day", type=float)
    parser.add_argument("--usd-per-month", type=float)
    parser.add_argument("--on-exceed", choices=["reject", "route"], help="over its budget (default: the team's)")
    parser.add_argument("--tag", action="append", default=[], metavar="K=V")
    parser.add_argument("--meta", action="append", default=[], metavar="K=V")


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
    _spec_options(create)
    update = sub.add_parser("update", help="change a key's name, aliases, expiry, limits, budget, tags")
    update.add_argument("key_id")
    _spec_options(update)
    update.add_argument("--all-models", action="store_true", help="let the key use every alias of its team")
    rotate = sub.add_parser("rotate", help="a new secret for a key; print it once")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", default="0", metavar="DURATION", help="how long the old key still works")
    listing = sub.add_parser("list", help="list keys (ids, teams, scope, last use, spend; never the keys)")
    listing.add_argument("--all", action="store_true", help="include revoked keys")
    info = sub.add_parser("info", help="one key's record as JSON")
    info.add_argument("key_id")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return parser


# The flag each field of the admin API's key body comes from, for one-line errors.
_FLAGS = {"duration": "--expires", "requests_per_minute": "--rpm", "tokens_per_minute": "--tpm",
          "usd_per_day": "--usd-per-day", "usd_per_month": "--usd-per-month", "name": "--name"}


def _flag_error(exc: ValidationError) -> str:
    """pydantic's first error as one line naming the flag: `--rpm: Input should be ...`."""
    first = exc.errors(include_url=False)[0]
    field = str(first["loc"][-1]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    return f"{_FLAGS.get(field, field)}: {message}" if field else message


def _policy_catalog(policy: Policy) -> Catalog:
    """Every alias the policy gives a team, whatever this shell's environment would open: the
    gateway's environment decides which backends are present, and a spawned engine has no URL here."""
    aliases = {alias: AliasEntry(tuple(Target(d.backend, d.model) for d in entry.deployments),
                                 None if entry.teams is None else frozenset(entry.teams))
               for alias, entry in policy.models.items() if entry.deployments}
    return Catalog(backends={}, aliases=aliases)


def _pairs(items: list[str], flag: str) -> dict[str, str] | None:
    if not items:
        return None
    if any("=" not in item for item in items):
        raise InvalidRequest(f"{flag} takes KEY=VALUE", param=flag)
    return dict(item.split("=", 1) for item in items)


def _body(args: argparse.Namespace) -> KeyUpdateBody:
    fields: dict[str, object] = {}
    if args.name is not None:
        fields["name"] = args.name
    if args.models or getattr(args, "all_models", False):
        fields["models"] = None if getattr(args, "all_models", False) else args.models
    if args.expires:
        fields["duration"] = args.expires
    if args.rpm is not None or args.tpm is not None:
        fields["limits"] = KeyLimitsBody(requests_per_minute=args.rpm, tokens_per_minute=args.tpm)
    if args.usd_per_day is not None or args.usd_per_month is not None or args.on_exceed:
        fields["budget"] = KeyBudgetBody(usd_per_day=args.usd_per_day, usd_per_month=args.usd_per_month,
                                         on_exceed=args.on_exceed)
    for name, flag in (("tags", "--tag"), ("metadata", "--meta")):
        pairs = _pairs(getattr(args, "tag" if name == "tags" else "meta"), flag)
        if pairs is not None:
            fields[name] = pairs
    return KeyUpdateBody(**fields)  # type: ignore[arg-type]


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _print_rows(rows: list[KeyRow]) -> None:
    print(f"{'key_id':<10} {'team':<16} {'name':<14} {'models':<18} {'expires':<19} {'last used':<19} "
          f"{'requests':>8} {'spend $':>10} revoked")
    for row in rows:
        models = ",".join(row.spec.models) if row.spec.models is not None else "*"
        print(f"{row.key_id:<10} {row.team:<16} {row.name:<14} {models:<18} {_when(row.spec.expires_at):<19} "
              f"{_when(row.last_used_at):<19} {row.requests:>8} {row.spend_usd:>10.4f} {_when(row.revoked_at)}")


def _create(store: KeyStorage, policy: Policy, args: argparse.Namespace) -> int:
    team = args.team.strip()
    refusal = new_key_refusal(team, policy) if team else "--team must not be empty"
    if refusal is not None:
        print(f"hybridgw keys: {refusal}", file=sys.stderr)
        return 2
    spec = apply(_body(args), KeySpec())
    check_spec(spec, team, _policy_catalog(policy))
    key, info = store.create(team, args.name or "", spec)
    print(key)
    served = served_team(team, policy)
    note = "" if served == team else f" (not in the policy: served as team {served!r})"
    print(f"created key {info.key_id} for team {info.team!r}{note}; it is shown only now", file=sys.stderr)
    return 0


def _update(store: KeyStorage, policy: Policy, args: argparse.Namespace) -> int:
    row = store.get(args.key_id)
    if row is None or row.revoked_at is not None or not store.update(
            args.key_id, row.name if args.name is None else args.name, _checked(row, policy, args)):
        print(f"hybridgw keys: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"updated {args.key_id}")
    return 0


def _checked(row: KeyRow, policy: Policy, args: argparse.Namespace) -> KeySpec:
    spec = apply(_body(args), row.spec)
    check_spec(spec, row.team, _policy_catalog(policy))
    return spec


def _rotate(store: KeyStorage, args: argparse.Namespace) -> int:
    try:
        grace = 0.0 if args.grace.strip() in ("0", "0s") else parse_duration(args.grace)
    except ValueError as exc:
        raise InvalidRequest(f"--grace: {exc}", param="--grace") from None
    rotated = store.rotate(args.key_id, grace)
    if rotated is None:
        print(f"hybridgw keys: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    print(rotated[0])
    print(f"rotated {args.key_id}; the old key works for {grace:.0f} s more; the new one is shown only now",
          file=sys.stderr)
    return 0


def _run(args: argparse.Namespace, store: KeyStorage, settings: Settings) -> int:
    if args.action in ("create", "update"):
        return (_create if args.action == "create" else _update)(store, load_with_every_backend(settings.policy_file).policy, args)
    if args.action == "rotate":
        return _rotate(store, args)
    if args.action == "list":
        _print_rows(store.list(include_revoked=args.all))
        return 0
    if args.action == "info":
        row = store.get(args.key_id)
        if row is None:
            print(f"hybridgw keys: no key {args.key_id!r}", file=sys.stderr)
            return 1
        print(orjson.dumps(row.to_dict(), option=orjson.OPT_INDENT_2).decode())
        return 0
    if not store.revoke(args.key_id):
        print(f"hybridgw keys: no active key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def _unavailable(settings: Settings, exc: KeyStoreUnavailable) -> str:
    """What a store that did not answer says: for Redis, where it was looked for (no credentials) and why."""
    if not settings.redis_url:
        return str(exc)
    scheme, sep, rest = settings.redis_url.partition("://")
    where = f"{scheme}{sep}{rest.rpartition('@')[2]}"  # a password in the URL is never printed
    return f"Redis at {where} is unreachable ({exc.__cause__ or exc})"


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(data_dir=args.data_dir, redis_url=args.redis_url, policy_file=args.config)
    except SettingsError as exc:  # a malformed number in the environment
        print(f"hybridgw keys: {exc}", file=sys.stderr)
        return 1
    os.umask(PRIVATE_UMASK)  # the key file (even before the first `serve`) is owner-only, as serve makes it
    try:
        secure_data_dir(settings.data_dir)
    except OSError as exc:  # a file there, a read-only or unreachable place
        print(f"hybridgw keys: cannot use the data dir {settings.data_dir}: {exc}", file=sys.stderr)
        return 1
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
    except ValidationError as exc:  # a bad --expires, --rpm, --usd-per-day ...
        print(f"hybridgw keys: {_flag_error(exc)}", file=sys.stderr)
        return 2
    except (InvalidRequest, ValueError) as exc:  # a bad --model, --grace ...
        print(f"hybridgw keys: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    except KeyStoreUnavailable as exc:
        print(f"hybridgw keys: {_unavailable(settings, exc)}", file=sys.stderr)
        return 1
    finally:
        store.close()
