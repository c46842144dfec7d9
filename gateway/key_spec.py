"""What a virtual key may do beyond naming its team: allowed aliases, expiry, its own rate limits and
budget, and free-form metadata/tags. Pure; stored as JSON beside the key's hash in every key store."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from observability.limits_config import TeamLimits

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
ON_EXCEED = ("reject", "route")


def parse_duration(text: str) -> float:
    """'90' / '90s' / '15m' / '12h' / '30d' / '2w' → seconds; ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 3600, 90s, 15m, 12h, 30d or 2w")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


@dataclass(frozen=True)
class KeySpec:
    """A key's own scope. None / empty means: as its team (every alias the team may use, no expiry,
    only the team's limits). Limits here are enforced by the same limiter as the team's, as the
    key's scope: a request must fit both."""

    models: tuple[str, ...] | None = None  # aliases this key may call; None: all its team may
    expires_at: float | None = None  # unix seconds; past it the key is refused with 401
    limits: TeamLimits = field(default_factory=TeamLimits)  # rpm, tpm, USD per day / month of this key alone
    on_exceed: str | None = None  # for the key's own budget; None: the team's on_exceed
    metadata: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        object.__setattr__(self, "tags", MappingProxyType(dict(self.tags)))

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def allows(self, alias: str) -> bool:
        return self.models is None or alias in self.models

    def has_limits(self) -> bool:
        return any(v is not None for v in vars(self.limits).values())

    def to_dict(self) -> dict[str, Any]:
        return {"models": None if self.models is None else list(self.models), "expires_at": self.expires_at,
                "limits": {"requests_per_minute": self.limits.requests_per_minute,
                           "tokens_per_minute": self.limits.tokens_per_minute},
                "budget": {"usd_per_day": self.limits.usd_per_day, "usd_per_month": self.limits.usd_per_month,
                           "on_exceed": self.on_exceed},
                "metadata": dict(self.metadata), "tags": dict(self.tags)}

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KeySpec:
        limits, budget = data.get("limits") or {}, data.get("budget") or {}
        models = data.get("models")
        return cls(models=None if models is None else tuple(models), expires_at=data.get("expires_at"),
                   limits=TeamLimits(requests_per_minute=limits.get("requests_per_minute"),
                                     tokens_per_minute=limits.get("tokens_per_minute"),
                                     usd_per_day=budget.get("usd_per_day"),
                                     usd_per_month=budget.get("usd_per_month")),
                   on_exceed=budget.get("on_exceed"), metadata=data.get("metadata") or {},
                   tags=data.get("tags") or {})

    @classmethod
    def from_json(cls, text: str | None) -> KeySpec:
        """A stored spec; a key made before specs existed (no column / field) has the empty one."""
        return cls() if not text else cls.from_dict(orjson.loads(text))

