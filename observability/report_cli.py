"""`hybridgw report`: a team's (or every team's) usage from the store the gateway writes (Redis when
REDIS_URL is set, else the SQLite file in the data dir) as a table, JSON, CSV or one HTML file. The
all-hosted comparison prices each alias as the policy does (a PolicyPrice the caller passes in),
else by the alias's own name in litellm's table, or everything as --hosted-model."""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from observability.chargeback import GROUPS, ChargebackPolicy
from observability.chargeback_render import render_chargeback
from observability.chargeback_source import fetch_chargeback
from observability.report import HostedCost, HostedPrice, first_priced, parse_since, price_label
from observability.report_render import FORMATS, render
from observability.report_source import fetch_report
from observability.stores import SQLITE_FILENAME, StoreUnavailable, default_data_dir
from observability.wiring import open_store


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybridgw report", description="Per-team usage report.")
    p.add_argument("--team", help="team to report on (default: every team)")
    p.add_argument("--since", default="7d", help="window before now: 90s, 30m, 12h, 7d, 2w (default 7d)")
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("--out", type=Path, help="write here instead of stdout")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="default: $REDIS_URL")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $HYBRIDGW_DATA_DIR or ~/.hybridgw")
    p.add_argument("--config", type=Path, help="the gateway's policy file: each alias is priced at its first "
                                               "priced hosted deployment (default: the embedded default policy)")
    p.add_argument("--hosted-model", help="price the all-hosted counterfactual as this hosted model "
                                          "(default: as the policy prices each alias, else by the alias's name)")
    p.add_argument("--no-hosted-price", action="store_true", help="skip the all-hosted comparison")
    p.add_argument("--by", choices=GROUPS, help="chargeback: one row per team, key or tag (table, json or a wide csv)")
    return p


PolicyPrice = Callable[[Path | None], HostedPrice]  # policy file (None: the default) -> its prices


def litellm_hosted_price(hosted_model: str | None) -> HostedPrice:
    """Prices from litellm's bundled table (offline); None for models it does not know."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price table
    why = "--hosted-model" if hosted_model else "the alias's own name"

    def price(model: str, prompt: int, completion: int) -> HostedCost | None:
        if not prompt and not completion:  # refused requests only (alias `unknown`, `none`): nothing to price
            return None
        import litellm  # slow import (~3 s): only once a report needs a price the policy did not give

        name = hosted_model or model
        entry = litellm.model_cost.get(name)
        if not isinstance(entry, dict):
            return None
        prompt_usd, completion_usd = litellm.cost_per_token(model=name, prompt_tokens=prompt,
                                                            completion_tokens=completion)
        label = price_label(name, float(entry.get("input_cost_per_token", 0.0)),
                            float(entry.get("output_cost_per_token", 0.0)), f"litellm, {why}")
        return HostedCost(float(prompt_usd + completion_usd), label)

    return price


def _hosted_price(args: argparse.Namespace, policy_price: PolicyPrice | None) -> HostedPrice | None:
    if args.no_hosted_price:
        return None
    by_name = litellm_hosted_price(args.hosted_model)
    if args.hosted_model or policy_price is None:
        return by_name
    return first_priced(policy_price(args.config), by_name)


def main(argv: list[str], hosted_price: HostedPrice | None = None, policy_price: PolicyPrice | None = None,
         chargeback_policy: Callable[[Path | None], ChargebackPolicy] | None = None) -> int:
    """`policy_price` reads a policy file's prices, `chargeback_policy` its local backends and budgets
    (the gateway wires both; observability cannot read a policy)."""
    args = _parser().parse_args(argv)
    try:
        since_s = parse_since(args.since)
        if hosted_price is None:
            hosted_price = _hosted_price(args, policy_price)
        charge_policy = ChargebackPolicy()
        if args.by is not None:
            if args.format == "html":
                raise ValueError("--by renders as table, json or csv")
            if chargeback_policy is not None:
                charge_policy = chargeback_policy(args.config)
    except ValueError as exc:  # a bad --since, or a policy file that does not load
        print(f"hybridgw report: {exc}", file=sys.stderr)
        return 2
    data_dir = args.data_dir or default_data_dir()
    if not args.redis_url and not (data_dir / SQLITE_FILENAME).exists():
        print(f"hybridgw report: no usage recorded yet ({data_dir / SQLITE_FILENAME} does not exist)",
              file=sys.stderr)
        return 1
    store = open_store(args.redis_url, data_dir)
    try:
        if args.by is not None:
            text = render_chargeback(fetch_chargeback(store, group=args.by, team=args.team, since_s=since_s,
                                                      now=time.time(), policy=charge_policy,
                                                      hosted_price=hosted_price), args.format)
        else:
            text = render(fetch_report(store, team=args.team, since_s=since_s, now=time.time(),
                                       hosted_price=hosted_price), args.format)
    except StoreUnavailable as exc:
        print(f"hybridgw report: usage store unavailable: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return _emit(text, args.out)


def _emit(text: str, out: Path | None) -> int:
    """The report on stdout, or in `out` (1 and one line when it cannot be written there)."""
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:  # a missing folder, a full disk ...
        print(f"hybridgw report: cannot write {out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}", file=sys.stderr)
    return 0
