"""The routing strategies, registered in one place: each is a rule model (its own fields, a member of
the `Rule` union on `strategy`) and a pure function ordering the rule's backends for one request.
Add one: a module here with both, and a line in STRATEGY_TYPES (DEVELOPERS.md)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from policies.rule_schema import RuleBase
from policies.strategies.base import Context, Outcome
from policies.strategies.cheapest_within_slo import CheapestWithinSloRule, cheapest_within_slo
from policies.strategies.first_match import FirstMatchRule, first_match
from policies.strategies.kv_fit import EngineFit, KvFitRule, kv_fit
from policies.strategies.prefix_affinity import PrefixAffinityRule, prefix_affinity
from policies.strategies.quality_floor import QualityFloorRule, quality_floor
from policies.strategies.slo_cost import SloCostRule, slo_cost

__all__ = ["STRATEGIES", "STRATEGY_TYPES", "Context", "EngineFit", "Outcome", "Rule", "StrategyType"]


@dataclass(frozen=True)
class StrategyType:
    rule: type[RuleBase]
    decide: Callable[[Any, Context], Outcome | None]


STRATEGY_TYPES: dict[str, StrategyType] = {
    "first_match": StrategyType(FirstMatchRule, first_match),
    "kv_fit": StrategyType(KvFitRule, kv_fit),
    "cheapest_within_slo": StrategyType(CheapestWithinSloRule, cheapest_within_slo),
    "quality_floor": StrategyType(QualityFloorRule, quality_floor),
    "slo_cost": StrategyType(SloCostRule, slo_cost),
    "prefix_affinity": StrategyType(PrefixAffinityRule, prefix_affinity),
}
STRATEGIES = {name: kind.decide for name, kind in STRATEGY_TYPES.items()}  # name → function (old callers)


def _strategy_of(value: Any) -> str:
    """The union's tag: `strategy`, first_match when a rule leaves it out."""
    if isinstance(value, dict):
        return str(value.get("strategy", "first_match"))
    return str(getattr(value, "strategy", "first_match"))


Rule = Annotated[
    Union[tuple(Annotated[kind.rule, Tag(name)] for name, kind in STRATEGY_TYPES.items())],  # noqa: UP007
    Discriminator(_strategy_of, custom_error_type="unknown_strategy",
                  custom_error_message=f"'strategy' must be one of {', '.join(STRATEGY_TYPES)}"),
]
