"""The admin API's key bodies (pydantic at the edge) and how they become a KeySpec: create takes every
field, update only the fields it names (the others stay). Shapes follow LiteLLM's /key/generate
(`models`, `duration`, `metadata`, `tags`, limits and budget) under hybridgw's own names."""
from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.catalog import Catalog
from gateway.errors import InvalidRequest
from gateway.key_spec import KeySpec, parse_duration
from observability.limits_config import MAX_COUNT_LIMIT, MAX_USD_LIMIT, TeamLimits

_MAX_ITEMS = 64  # metadata / tags / models entries: a key record is read on every store lookup
_MAX_TEXT = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # true is no count, "5" no number


class KeyLimitsBody(_Strict):
    requests_per_minute: int | None = Field(default=None, ge=1, le=MAX_COUNT_LIMIT)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=MAX_COUNT_LIMIT)


class KeyBudgetBody(_Strict):
    usd_per_day: float | None = Field(default=None, ge=0, le=MAX_USD_LIMIT, allow_inf_nan=False)
    usd_per_month: float | None = Field(default=None, ge=0, le=MAX_USD_LIMIT, allow_inf_nan=False)
    on_exceed: Literal["reject", "route"] | None = None  # None: the team's


class KeyUpdateBody(_Strict):
    name: str | None = Field(default=None, max_length=_MAX_TEXT)
    models: list[str] | None = Field(default=None, max_length=_MAX_ITEMS)  # null: every alias of the team
    expires_at: float | None = Field(default=None, gt=0, allow_inf_nan=False)  # unix seconds
    duration: str | None = None  # "30d", "12h", "3600": expires that long from now (beats expires_at)
    limits: KeyLimitsBody | None = None
    budget: KeyBudgetBody | None = None
    metadata: dict[str, str] | None = Field(default=None, max_length=_MAX_ITEMS)
    tags: dict[str, str] | None = Field(default=None, max_length=_MAX_ITEMS)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("metadata", "tags")
    @classmethod
    def _short(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for k, v in (value or {}).items():
            if len(k) > _MAX_TEXT or len(v) > _MAX_TEXT:
                raise ValueError(f"keys and values must be at most {_MAX_TEXT} characters")
        return value


class KeyCreateBody(KeyUpdateBody):
    team: str = Field(min_length=1, max_length=_MAX_TEXT)


class RotateBody(_Strict):
    grace_period: str = "0"  # how long the old key keeps working, e.g. "1h"; 0: not at all

    @field_validator("grace_period")
    @classmethod
    def _grace(cls, value: str) -> str:
        if value.strip() not in ("0", "0s"):
            parse_duration(value)
        return value


def grace_seconds(body: RotateBody) -> float:
    return 0.0 if body.grace_period.strip() in ("0", "0s") else parse_duration(body.grace_period)


def apply(body: KeyUpdateBody, base: KeySpec, now: float | None = None) -> KeySpec:
    """The spec after this body: the fields it names replace base's, the others stay."""
    given = body.model_fields_set
    now = time.time() if now is None else now
    limits, on_exceed = base.limits, base.on_exceed
    if body.limits is not None:
        limits = TeamLimits(body.limits.requests_per_minute, body.limits.tokens_per_minute,
                            limits.usd_per_day, limits.usd_per_month)
    if body.budget is not None:
        limits = TeamLimits(limits.requests_per_minute, limits.tokens_per_minute,
                            body.budget.usd_per_day, body.budget.usd_per_month)
        on_exceed = body.budget.on_exceed
    expires_at = base.expires_at
    if "expires_at" in given:
        expires_at = body.expires_at
    if body.duration is not None:
        expires_at = now + parse_duration(body.duration)
    return KeySpec(models=tuple(body.models) if body.models is not None else None if "models" in given
                   else base.models,
                   expires_at=expires_at, limits=limits, on_exceed=on_exceed,
                   metadata=body.metadata if body.metadata is not None else base.metadata,
                   tags=body.tags if body.tags is not None else base.tags)


def check_spec(spec: KeySpec, team: str, catalog: Catalog, now: float | None = None) -> None:
    """InvalidRequest for a spec no request could use: an alias the team may not call, a past expiry."""
    for alias in spec.models or ():
        if not catalog.may_use(team, alias):
            raise InvalidRequest(f"Model {alias!r} is not an alias team {team!r} may use "
                                 f"(it may use: {', '.join(catalog.models_for(team)) or 'none'}).",
                                 param="models", code="unknown_model")
    if spec.expires_at is not None and spec.expires_at <= (time.time() if now is None else now):
        raise InvalidRequest("expires_at is in the past.", param="expires_at", code="invalid_value")
