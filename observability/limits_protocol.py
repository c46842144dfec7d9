"""The seam between the gateway and rate limits / budgets: reserve before the call, settle after."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from observability.fast_init import dict_init
from observability.limits_config import LimitsConfig, TeamLimits

if TYPE_CHECKING:  # limiter_health reads limiters (and so imports this seam); only the type is needed here
    from observability.limiter_health import LimiterState


@dict_init  # three a request (and the Reservation below): half the build cost of dataclass's __init__
@dataclass(frozen=True)
class WindowState:
    """One limit's window as a client is told of it (x-ratelimit-* headers): of the team's and the
    key's windows for this limit, the one with the least left."""

    limit_name: str  # "requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month"
    limit: int  # requests, tokens or nano-USD
    remaining: int  # after this request's charge (its estimate, for tokens); never below 0
    reset_s: float  # seconds until the window ends (and its count starts again)


class LimitExceeded(Exception):
    """A team or key is over one of its limits; the gateway answers 429 with Retry-After."""

    def __init__(self, limit: str, message: str, retry_after_s: float, *, scope: str = "team",
                 window: WindowState | None = None) -> None:
        super().__init__(message)
        self.limit = limit  # e.g. "tokens_per_minute", "usd_per_day"
        self.message = message
        self.retry_after_s = retry_after_s
        self.scope = scope  # "team" or "key": whose limit it is (a key's budget may route, not refuse)
        self.window = window  # the full window, for the 429's x-ratelimit-* headers


@dataclass(frozen=True)
class LimitUsage:
    """What one of a team's or key's windows has used now (for budget-aware routing and the console)."""

    scope: str
    owner: str
    limit_name: str
    used: float  # requests, tokens or USD
    limit: float
    window_end: float


@dict_init
@dataclass(frozen=True)
class Reservation:
    """What was held against a team's limits for one request, to be settled with the actuals."""

    request_id: str
    team: str
    key_id: str
    tokens: int
    cost_usd: float
    window_keys: tuple[str, ...] = ()  # store-specific ids of the windows charged
    budgets_left: tuple[tuple[str, float], ...] = ()  # (scope, USD left in its tightest enforced budget)
    windows: tuple[WindowState, ...] = ()  # per rate limit, the tightest window after this charge

    @property
    def usd_headroom(self) -> float | None:
        """USD left in the tightest enforced budget, team's or key's, after this charge (None: none)."""
        budgets = self.budgets_left
        if len(budgets) < 2:  # one scope's budget (or none), per response: no generator to take the min of one
            return budgets[0][1] if budgets else None
        return min(left for _, left in budgets)

    def usd_left(self, scopes: Collection[str]) -> float | None:
        """USD left in the tightest enforced budget of these scopes (None: none of them has one)."""
        left = [usd for scope, usd in self.budgets_left if scope in scopes]
        return min(left) if left else None


class Limiter(Protocol):
    async def reserve(self, request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                      *, unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> Reservation:
        """Hold the estimate or raise LimitExceeded. unchecked: scopes ("team", "key") whose USD budgets
        count the spend without refusing on it (that scope is over budget and re-routed).
        key_limits: the limits stored with the key (key store), enforced beside the policy's."""
        ...

    async def check_requests(self, team: str, key_id: str, *, key_limits: TeamLimits | None = None) -> None:
        """Raise LimitExceeded when a requests-per-minute window of the team or key is already full.
        Charges nothing (reserve stays the one charge): the cheap check before the prompt is counted."""
        ...

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace the held estimate with the actual numbers (also on failure/abort)."""
        ...

    async def usage(self, team: str, key_id: str, key_limits: TeamLimits | None = None) -> list[LimitUsage]:
        """What each of the team's and key's windows has used now (charges nothing)."""
        ...

    def reconfigure(self, config: LimitsConfig) -> None:
        """Apply a reloaded policy's limits to the next reservations."""
        ...

    def state(self) -> LimiterState | None:
        """Whether limits are enforced or failing open, and why (None: a limiter that cannot fail)."""
        ...

    async def aclose(self) -> None: ...
