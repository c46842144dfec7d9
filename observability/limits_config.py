"""The limits a policy sets per team and per key (requests and tokens per minute, USD per day and
per month) and how a key's stored limits combine with them. Plain values, no I/O."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month")
# The largest limit a policy or a key may set. USD are counted in integer nano-dollars: 1e9 USD is 1e18 of
# them, under the limiter's 2**62 "unchecked" mark; a larger one (1e308) became infinity and a 500 per request.
MAX_USD_LIMIT = 1e9
MAX_COUNT_LIMIT = 10**15


@dataclass(frozen=True)
class TeamLimits:
    """Limits for one team or one key; None means unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None


@dataclass(frozen=True)
class LimitsConfig:
    teams: Mapping[str, TeamLimits] = field(default_factory=dict)
    keys: Mapping[str, TeamLimits] = field(default_factory=dict)  # by key_id
    default_team: TeamLimits = TeamLimits()  # for teams not listed

    def __post_init__(self) -> None:
        object.__setattr__(self, "teams", MappingProxyType(dict(self.teams)))
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def scopes(self, team: str, key_id: str, key_limits: TeamLimits | None = None) -> list[tuple[str, str, TeamLimits]]:
        """The team's limits, then the key's: the policy's `keys:` entry and the limits stored with
        the key (`key_limits`, from the key store), field by field the tighter of the two."""
        out = [("team", team, self.teams.get(team, self.default_team))]
        limits = tighter(self.keys.get(key_id), key_limits)
        if limits is not None:
            out.append(("key", key_id, limits))
        return out


def tighter(a: TeamLimits | None, b: TeamLimits | None) -> TeamLimits | None:
    """Field by field the smaller of two limits (None = unlimited)."""
    if a is None or b is None:
        return a if b is None else b

    def low(x: float | None, y: float | None) -> float | None:
        return x if y is None else y if x is None else min(x, y)

    return TeamLimits(*(low(getattr(a, n), getattr(b, n)) for n in LIMIT_NAMES))  # type: ignore[arg-type]
