"""The routing rules' part of the policy schema: conditions on request facts and live state, and
the fields every rule has (each strategy adds its own, in policies/strategies/)."""
from __future__ import annotations

import re
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Scalar = str | int | float | bool
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# Rule and backend names go into response headers (x-hybridgw-route-rule, x-hybridgw-backend), which
# are Latin-1 without control characters; a name outside that would fail after the upstream answered.
_HEADER_SAFE = re.compile(r"^[\x20-\x7e\xa0-\xff]+$")


def header_safe(name: str, what: str) -> str:
    """`name` unchanged if it can go into an HTTP header value; else a ValueError naming `what`."""
    if not _HEADER_SAFE.match(name) or name != name.strip():
        raise ValueError(f"{what} {name!r} cannot go into an HTTP header: use printable Latin-1 characters "
                         "(letters, digits, - _ . :), no control characters, no leading or trailing space")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Cmp(_Strict):
    """A comparison. Shorthands: a scalar means `eq`, a list means `in`."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    exists: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"in": value}
        if isinstance(value, (str, int, float, bool)):
            return {"eq": value}
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Cmp:
        if not self.model_fields_set:
            raise ValueError("empty comparison; use one of eq, ne, gt, gte, lt, lte, in, not_in, exists")
        return self


class TimeWindow(_Strict):
    """Local time of day (`between` may wrap midnight) and/or days of the week, in time zone `tz`."""

    between: tuple[str, str] | None = None  # ["22:00", "06:00"]: start inclusive, end exclusive
    days: list[Day] | None = None
    tz: str = "UTC"

    @field_validator("between")
    @classmethod
    def _hhmm(cls, value: tuple[str, str] | None) -> tuple[str, str] | None:
        for part in value or ():
            if not _HHMM.match(part):
                raise ValueError(f"{part!r} is not a time of day; write HH:MM, e.g. \"09:30\"")
        return value

    @field_validator("tz")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin") from exc
        return value


class BackendCond(_Strict):
    """Conditions on one backend's live state (engines' figures come from their polled state)."""

    waiting: Cmp | None = None  # requests queued in the engine
    running: Cmp | None = None
    kv_free_ratio: Cmp | None = None  # free blocks (after in-flight reservations) / total, 0..1
    ttft_s: Cmp | None = None  # recent TTFT (EWMA) seen through this gateway
    fits: bool | None = None  # this request's KV blocks fit in the free blocks
    healthy: bool | None = None  # circuit closed and, for engines, fresh state


class When(_Strict):
    """All present conditions must hold (AND); `any` holds when one of its alternatives does (OR)."""

    team: Cmp | None = None
    model: Cmp | None = None  # the alias the client asked for
    prompt_tokens: Cmp | None = None
    expected_output_tokens: Cmp | None = None
    total_tokens: Cmp | None = None  # prompt + expected output
    difficulty: Cmp | None = None  # P(the local model's answer is not good enough), 0..1 (policies.quality)
    category: Cmp | None = None  # the nearest of the policy's `categories` (semantic routes)
    stream: bool | None = None
    over_budget: bool | None = None
    headers: dict[str, Cmp] = Field(default_factory=dict)  # x-* request headers, names lower-cased
    tags: dict[str, Cmp] = Field(default_factory=dict)
    time: TimeWindow | None = None
    state: dict[str, BackendCond] = Field(default_factory=dict)  # backend name -> conditions
    any: list[When] | None = None

    @field_validator("headers")
    @classmethod
    def _lower(cls, value: dict[str, Cmp]) -> dict[str, Cmp]:
        for name in value:
            if not name.lower().startswith("x-"):
                raise ValueError(f"header {name!r}: rules see only x-* headers (e.g. x-priority)")
        return {name.lower(): cmp for name, cmp in value.items()}


class RuleBase(_Strict):
    """What every rule has, whatever its strategy. Each strategy's own fields live in its module
    (policies/strategies/); `Rule` is their union, told apart by `strategy` (first_match when absent).

    The class variables say which fields name what, so the loader and the checks need no per-strategy
    lists: `target_fields` hold backends, `required_targets` must keep one backend for the rule to
    survive pruning, `engine_fields` must name engines with state, `slo_fields` name `slos`."""

    target_fields: ClassVar[tuple[str, ...]] = ()
    required_targets: ClassVar[str] = ""
    engine_fields: ClassVar[tuple[str, ...]] = ()
    slo_fields: ClassVar[tuple[str, ...]] = ()
    uses_difficulty: ClassVar[bool] = False  # decide() needs the request's difficulty score
    uses_prefix_index: ClassVar[bool] = False  # decide() needs facts.prefix_match (prefix affinity)

    name: str = Field(min_length=1)
    description: str = ""
    when: When = Field(default_factory=When)
    shadow: bool = False  # evaluated and recorded, never applied

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return header_safe(value, "rule name")

    def backends(self) -> list[str]:
        """Every backend this rule may route to, in its own order."""
        return [b for f in self.target_fields for b in getattr(self, f)]

    def warnings(self, policy: Any) -> list[tuple[str, str]]:
        """(field, message) for what this strategy finds valid but likely wrong in `policy`."""
        return []


def __getattr__(name: str) -> Any:
    # `Rule` (the union) is built from the strategy registry, which imports this module: resolved
    # on first use so that `from policies.rule_schema import Rule` keeps working.
    if name == "Rule":
        from policies.strategies import Rule

        return Rule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
