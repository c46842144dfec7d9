"""The routing rules' part of the policy schema: conditions on request facts and live state, and
the strategy a matching rule uses to order its targets."""
from __future__ import annotations

import re
from typing import Any, Literal
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


Strategy = Literal["first_match", "kv_fit", "cheapest_within_slo", "quality_floor"]
_STRATEGY_FIELDS: dict[str, tuple[str, ...]] = {
    "first_match": ("route",),
    "kv_fit": ("local", "spill", "max_waiting"),
    "cheapest_within_slo": ("candidates", "slo"),
    "quality_floor": ("local", "spill", "max_waiting", "max_difficulty", "hard_to_local"),
}


class Rule(_Strict):
    """One routing rule. Rules are tried in order; the first that matches (and is not shadow) decides.

    first_match: `route` lists backends in the order to try.
    kv_fit: engines in `local` that fit the request (KV blocks, context and a short queue), fewest
    waiting then most headroom first, then `spill`, then engines whose state is unknown (stale) as
    a last resort (an engine whose server refuses connections is down, not unknown: skipped); when
    every engine is known not to fit and there is no spill: refused — 503 + Retry-After while it is
    full, 400 when the request is larger than its context or whole KV pool.
    cheapest_within_slo: `candidates` that are predicted to meet the TTFT SLO, cheapest first,
    then the rest by predicted TTFT.
    quality_floor: a request whose difficulty is at most `max_difficulty` goes as kv_fit does (local
    if it fits, else `spill`); a harder one (or one not scored) goes to `spill` only — to `local` as a
    fallback after it when `hard_to_local` is true, else never.
    """

    name: str = Field(min_length=1)
    description: str = ""
    when: When = Field(default_factory=When)
    strategy: Strategy = "first_match"
    route: list[str] = Field(default_factory=list)
    local: list[str] = Field(default_factory=list)
    spill: list[str] = Field(default_factory=list)
    max_waiting: int | None = Field(default=None, ge=0)  # default: the backend's own max_waiting
    candidates: list[str] = Field(default_factory=list)
    slo: str | None = None
    max_difficulty: float | None = Field(default=None, ge=0.0, le=1.0)
    hard_to_local: bool = False
    shadow: bool = False  # evaluated and recorded, never applied

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return header_safe(value, "rule name")

    @model_validator(mode="after")
    def _fields_fit_strategy(self) -> Rule:
        own = _STRATEGY_FIELDS[self.strategy]
        for strategy, fields in _STRATEGY_FIELDS.items():
            for name in fields:
                if strategy != self.strategy and name not in own and name in self.model_fields_set:
                    raise ValueError(f"field {name!r} belongs to strategy {strategy}, not {self.strategy}")
        required = {"first_match": "route", "kv_fit": "local", "cheapest_within_slo": "candidates",
                    "quality_floor": "local"}
        if not getattr(self, required[self.strategy]):
            raise ValueError(f"strategy {self.strategy} needs a non-empty {required[self.strategy]!r} list")
        if self.strategy == "cheapest_within_slo" and not self.slo:
            raise ValueError("strategy cheapest_within_slo needs 'slo' (a name from the policy's slos)")
        if self.strategy == "quality_floor" and self.max_difficulty is None:
            raise ValueError("strategy quality_floor needs 'max_difficulty' (0..1: harder requests skip local)")
        return self

    def backends(self) -> list[str]:
        """Every backend this rule may route to, in its own order."""
        return [*self.route, *self.local, *self.spill, *self.candidates]
