"""The all-hosted comparison priced from the policy, for GET /v1/usage and `hybridgw report`: each
alias at its first priced hosted deployment (CompiledPolicy.hosted_deployment, the one rule both
use), named in the report. Wired here because observability never reads a policy itself."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from observability import report_cli
from observability.chargeback import ChargebackPolicy
from observability.report import HostedCost, HostedPrice, price_label
from policies.compiled import CompiledPolicy, compile_policy
from policies.errors import PolicyError
from policies.estimator import litellm_price_table
from policies.loader import (
    DEFAULT_POLICY_NAME,
    LoadedPolicy,
    default_policy_text,
    load_policy,
    read_policy_text,
)
from policies.schema import Price


def policy_hosted_price(compiled: Callable[[], CompiledPolicy]) -> HostedPrice:
    """Prices from the policy `compiled()` returns at each call (the live one, across reloads)."""
    def price(alias: str, prompt: int, completion: int) -> HostedCost | None:
        found = compiled().hosted_deployment(alias)
        if found is None:
            return None
        target, token_price = found
        label = price_label(f"{target.backend}/{target.model}", token_price.input_usd, token_price.output_usd,
                            token_price.source)
        return HostedCost(token_price.cost(prompt, completion), label)

    return price


def _local_price(price: Price | None) -> str | None:
    if price is None:
        return None
    if price.input_usd_per_mtok is not None or price.output_usd_per_mtok is not None:
        return (f"${price.input_usd_per_mtok or 0:.4g} in, ${price.output_usd_per_mtok or 0:.4g} out per Mtok "
                "(policy)")
    if price.usd_per_gpu_hour is not None:
        return f"${price.usd_per_gpu_hour:.4g}/GPU-hour ÷ measured tokens/s (policy)"
    return None


def chargeback_policy(compiled: CompiledPolicy) -> ChargebackPolicy:
    """Local = the engines the policy polls (ours, vLLM-style); their prices; each team's budgets."""
    policy = compiled.policy
    prices = {name: label for name in compiled.engines
              if name in policy.backends and (label := _local_price(policy.backends[name].price)) is not None}
    budgets = {name: (team.budget.usd_per_day, team.budget.usd_per_month) for name, team in policy.teams.items()}
    return ChargebackPolicy(frozenset(compiled.engines), prices, budgets)


def every_backend_present(text: str, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus every variable a backend's requires_env names: the comparison asks what hosted
    would have cost, not whether this shell holds the hosted API's key."""
    try:
        data = yaml.safe_load(text)
        backends = data.get("backends") if isinstance(data, dict) else None
    except yaml.YAMLError:
        backends = None  # load_policy below reports the error with its line
    names = [b["requires_env"] for b in (backends or {}).values() if isinstance(b, dict) and b.get("requires_env")]
    return {**environ, **{str(name): environ.get(str(name)) or "set" for name in names}}


def policy_file_price(config: Path | None) -> HostedPrice:
    """Prices from a policy file (None: the embedded default policy); ValueError when it does not load."""
    compiled = _compiled_file(config)
    return policy_hosted_price(lambda: compiled)


def policy_file_chargeback(config: Path | None) -> ChargebackPolicy:
    return chargeback_policy(_compiled_file(config))


def load_with_every_backend(config: Path | None) -> LoadedPolicy:
    """The policy file (None: the embedded default) with every backend present: what a command run from a shell
    (report, keys) asks of the gateway's policy is not whether this shell holds the hosted API's key."""
    if config is None:
        text, name = default_policy_text(), DEFAULT_POLICY_NAME
    else:
        text, name = read_policy_text(config), str(config)
    return load_policy(text, name, every_backend_present(text, os.environ))


def _compiled_file(config: Path | None) -> CompiledPolicy:
    """The policy file compiled (None: the embedded default); ValueError when it does not load."""
    try:
        loaded = load_with_every_backend(config)
    except (OSError, UnicodeDecodeError, PolicyError) as exc:
        raise ValueError(f"cannot price from the policy: {exc}") from None
    return compile_policy(loaded.policy, litellm_price_table(), loaded.source)


def main(argv: list[str]) -> int:
    """`hybridgw report`, with the policy's prices for the all-hosted comparison."""
    return report_cli.main(argv, policy_price=policy_file_price, chargeback_policy=policy_file_chargeback)
