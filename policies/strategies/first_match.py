"""first_match: the rule's `route`, as written (backends the team may use for this model)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from policies.rule_schema import RuleBase
from policies.strategies.base import Context, Outcome


class FirstMatchRule(RuleBase):
    """`route` lists backends in the order to try."""

    target_fields: ClassVar[tuple[str, ...]] = ("route",)
    required_targets: ClassVar[str] = "route"

    strategy: Literal["first_match"] = "first_match"
    route: list[str] = Field(min_length=1)


def first_match(rule: FirstMatchRule, ctx: Context) -> Outcome | None:
    backends = tuple(b for b in rule.route if b in ctx.usable)
    return Outcome(backends, "route " + ", ".join(backends)) if backends else None
