"""The all-hosted comparison priced from the policy, for GET /v1/usage and `hybridgw report`: each
alias at its first priced hosted deployment (CompiledPolicy.hosted_deployment, the one rule both
use), named in the report. Wired here because observability never reads a policy itself."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path

import yaml

from observability import report_cli
from observability.report import HostedCost, HostedPrice, price_label
from policies.compiled import CompiledPolicy, compile_policy
from policies.errors import PolicyError
from policies.estimator import litellm_price_table
from policies.loader import load_policy


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


def _every_backend_present(text: str, environ: Mapping[str, str]) -> dict[str, str]:
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
    try:
        if config is None:
            text, name = resources.files("policies").joinpath("defaults/default.yaml").read_text("utf-8"), "<default>"
        else:
            text, name = Path(config).read_text(encoding="utf-8"), str(config)
        loaded = load_policy(text, name, _every_backend_present(text, os.environ))
    except (OSError, UnicodeDecodeError, PolicyError) as exc:
        raise ValueError(f"cannot price from the policy: {exc}") from None
    compiled = compile_policy(loaded.policy, litellm_price_table(), loaded.source)
    return policy_hosted_price(lambda: compiled)


def main(argv: list[str]) -> int:
    """`hybridgw report`, with the policy's prices for the all-hosted comparison."""
    return report_cli.main(argv, policy_price=policy_file_price)
