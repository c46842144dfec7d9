"""What a request costs on a target: a hosted deployment's price, or an engine's (a set price, or
$/GPU-hour over the engine's measured throughput in its latest polled state)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from policies.current import CurrentPolicy
from policies.decision import Target
from policies.estimator import TokenPrice, local_price
from policies.live import EngineSnapshot


class Snapshots(Protocol):
    """Where the latest engine snapshots are read (the engine-state poller)."""

    @property
    def snapshots(self) -> Mapping[str, EngineSnapshot]: ...


class Pricing:
    def __init__(self, policy: CurrentPolicy, engines: Snapshots) -> None:
        self._policy, self._engines = policy, engines

    def cost_usd(self, target: Target, prompt_tokens: int, completion_tokens: int) -> float:
        """What a finished request cost on its target (0.0 where no price is known)."""
        compiled = self._policy.current
        price: TokenPrice | None
        if target.backend in compiled.engines:
            spec = compiled.policy.backends.get(target.backend)
            price = local_price(compiled.policy.prices.get(target.model) or (spec.price if spec else None),
                                self._engines.snapshots.get(target.backend))
        else:
            price = compiled.hosted_prices.get((target.backend, target.model))
        return price.cost(prompt_tokens, completion_tokens) if price is not None else 0.0

    def hosted_cost_usd(self, alias: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """What the tokens would have cost on the alias's first priced hosted deployment (for the
        reports' all-hosted comparison); None when the alias has none."""
        found = self._policy.current.hosted_deployment(alias)
        return found[1].cost(prompt_tokens, completion_tokens) if found is not None else None
