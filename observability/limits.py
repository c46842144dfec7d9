"""Rate limits and budgets per team and per key: the config, the pure window/charge math, and the
in-process Limiter for the embedded (no Redis) case. The Redis limiter in limits_redis.py runs the
same math atomically in Lua so every gateway replica sees one count.

Windows are fixed and UTC-aligned: requests and tokens per minute, USD per day and per month. The
estimate is charged at reserve(); settle() replaces it with the actuals in the same windows."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import quote

from observability.limits_protocol import LimitExceeded, Reservation, WindowState

if TYPE_CHECKING:  # the embedded case never imports redis
    from observability.limits_redis import RedisLimiter

NANO = 1_000_000_000  # USD is counted in integer nano-dollars, so sums are exact
LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month")
_UNITS = {"requests_per_minute": "requests/min", "tokens_per_minute": "tokens/min",
          "usd_per_day": "USD/day", "usd_per_month": "USD/month"}


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


@dataclass(frozen=True)
class Charge:
    key: str  # "<scope>:<id>:<limit>:<window start>", the store's counter id
    scope: str  # "team" or "key"
    owner: str  # the team name or key id
    limit_name: str
    amount: int  # 1 request, N tokens or nano-USD
    limit: int
    window_end: float


@dataclass(frozen=True)
class LimitUsage:
    scope: str
    owner: str
    limit_name: str
    used: float  # requests, tokens or USD
    limit: float
    window_end: float


def window(limit_name: str, now: float) -> tuple[int, float]:
    """(start, end) unix seconds of the UTC window containing now."""
    if limit_name.endswith("per_minute"):
        start = int(now // 60 * 60)
        return start, start + 60.0
    if limit_name == "usd_per_day":
        start = int(now // 86400 * 86400)
        return start, start + 86400.0
    moment = datetime.fromtimestamp(now, UTC)
    first = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = first.replace(year=first.year + 1, month=1) if first.month == 12 else first.replace(month=first.month + 1)
    return int(first.timestamp()), following.timestamp()


@lru_cache(maxsize=4)
def _windows_of_minute(minute: int) -> dict[str, tuple[int, float]]:
    # every window boundary is on a whole minute, so one lookup per minute serves all requests in it
    return {name: window(name, minute * 60.0) for name in LIMIT_NAMES}


@lru_cache(maxsize=4096)
def _quoted(owner: str) -> str:
    return quote(owner, safe="")


def window_key(scope: str, owner: str, limit_name: str, start: int) -> str:
    """The counter id of one window: "<scope>:<quoted owner>:<limit>:<window start>"."""
    return f"{scope}:{_quoted(owner)}:{limit_name}:{start}"


def _amount(limit_name: str, tokens: int, cost_usd: float) -> int:
    if limit_name == "requests_per_minute":
        return 1
    if limit_name == "tokens_per_minute":
        return max(tokens, 0)
    return max(round(cost_usd * NANO), 0)


def _scaled(limit_name: str, value: float) -> int:
    return round(value * NANO) if limit_name.startswith("usd") else int(value)


UNCHECKED_LIMIT = 2**62  # a limit no window reaches: the charge is counted but never refused


def plan_charges(config: LimitsConfig, team: str, key_id: str, tokens: int, cost_usd: float,
                 now: float, unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> list[Charge]:
    """Every window this request must fit in, with what it would add to each. The USD windows of the
    scopes in `unchecked` ("team", "key") still count the spend but do not refuse on it (over-budget
    routing of that scope); the other scope's budget is enforced as ever."""
    charges = []
    windows = _windows_of_minute(int(now // 60))
    for scope, owner, limits in config.scopes(team, key_id, key_limits):
        for name in LIMIT_NAMES:
            value = getattr(limits, name)
            if value is None:
                continue
            start, end = windows[name]
            limit = UNCHECKED_LIMIT if scope in unchecked and name.startswith("usd") else _scaled(name, value)
            charges.append(Charge(window_key(scope, owner, name, start), scope, owner, name,
                                  _amount(name, tokens, cost_usd), limit, end))
    return charges


def request_charges(config: LimitsConfig, team: str, key_id: str, now: float,
                    key_limits: TeamLimits | None = None) -> list[Charge]:
    """The requests-per-minute windows of a team and its key: what check_requests reads."""
    return [c for c in plan_charges(config, team, key_id, 0, 0.0, now, key_limits=key_limits)
            if c.limit_name == "requests_per_minute"]


def first_exceeded(charges: Sequence[Charge], used: Sequence[int]) -> int | None:
    """Index of the first charge that would go over its limit, given what each window has used. A
    charge of nothing never does: a team over its USD budget is still served at $0 (local)."""
    for index, (charge, already) in enumerate(zip(charges, used)):
        if charge.amount > 0 and already + charge.amount > charge.limit:
            return index
    return None


def usd_headroom(charges: Sequence[Charge], used: Sequence[int]) -> tuple[tuple[str, float], ...]:
    """Per scope ("team", "key") with an enforced USD budget, the USD left in its tightest budget
    window once these charges are added (empty: no budget enforced)."""
    left: dict[str, int] = {}
    for c, u in zip(charges, used):
        if c.limit_name.startswith("usd") and c.limit != UNCHECKED_LIMIT:
            room = c.limit - u - c.amount
            left[c.scope] = min(room, left.get(c.scope, room))
    return tuple((scope, max(room, 0) / NANO) for scope, room in left.items())


def _human(limit_name: str, value: float) -> str:
    return f"${value / NANO:.4f}" if limit_name.startswith("usd") else str(int(value))


def exceeded(charge: Charge, used: int, now: float) -> LimitExceeded:
    # Whole seconds, rounded up: Retry-After and x-ratelimit-reset-* then say the same number.
    retry = float(max(1, math.ceil(charge.window_end - now)))
    message = (f"{charge.scope} {charge.owner!r} is over its {_UNITS[charge.limit_name]} limit: "
               f"{_human(charge.limit_name, used)} of {_human(charge.limit_name, charge.limit)} used, "
               f"this request needs {_human(charge.limit_name, charge.amount)}; retry after {retry:.0f} s")
    state = WindowState(charge.limit_name, charge.limit, max(charge.limit - used, 0), retry)
    return LimitExceeded(charge.limit_name, message, retry, scope=charge.scope, window=state)


def window_states(charges: Sequence[Charge], used_after: Sequence[int], now: float) -> tuple[WindowState, ...]:
    """Per limit name, the window (team's or key's) with the least left once this request is
    charged: what the x-ratelimit-* headers report. Unchecked (over-budget) windows are left out."""
    tightest: dict[str, WindowState] = {}
    for charge, used in zip(charges, used_after):
        if charge.limit >= UNCHECKED_LIMIT:
            continue
        state = WindowState(charge.limit_name, charge.limit, max(charge.limit - used, 0),
                            max(charge.window_end - now, 0.0))
        best = tightest.get(charge.limit_name)
        if best is None or state.remaining < best.remaining:
            tightest[charge.limit_name] = state
    return tuple(tightest.values())


def settle_deltas(reservation: Reservation, tokens: int, cost_usd: float) -> list[tuple[str, int]]:
    """(window key, actual − estimate) for every charged window whose amount depends on the outcome."""
    deltas = []
    for key in reservation.window_keys:
        name = key.rsplit(":", 2)[1]
        if name == "requests_per_minute":
            continue
        delta = _amount(name, tokens, cost_usd) - _amount(name, reservation.tokens, reservation.cost_usd)
        if delta:
            deltas.append((key, delta))
    return deltas


def usage_from(charges: Sequence[Charge], used: Sequence[int]) -> list[LimitUsage]:
    def unscale(name: str, v: int) -> float:
        return v / NANO if name.startswith("usd") else float(v)

    return [LimitUsage(c.scope, c.owner, c.limit_name, unscale(c.limit_name, u), unscale(c.limit_name, c.limit),
                       c.window_end) for c, u in zip(charges, used)]


class InProcessLimiter:
    """The Limiter for one gateway process without Redis (the embedded default)."""

    def __init__(self, config: LimitsConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (used, window end)
        self._lock = threading.Lock()

    async def reserve(self, request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                      *, unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> Reservation:
        now = self._clock()
        charges = plan_charges(self.config, team, key_id, tokens, cost_usd, now, unchecked, key_limits)
        with self._lock:
            used = [self._counts.get(c.key, (0, 0.0))[0] for c in charges]
            bad = first_exceeded(charges, used)
            if bad is not None:
                raise exceeded(charges[bad], used[bad], now)
            for charge, already in zip(charges, used):
                self._counts[charge.key] = (already + charge.amount, charge.window_end)
            self._sweep(now)
        return Reservation(request_id, team, key_id, tokens, cost_usd, tuple(c.key for c in charges),
                           usd_headroom(charges, used),
                           window_states(charges, [u + c.amount for c, u in zip(charges, used)], now))

    async def check_requests(self, team: str, key_id: str, *, key_limits: TeamLimits | None = None) -> None:
        now = self._clock()
        charges = request_charges(self.config, team, key_id, now, key_limits)
        with self._lock:
            used = [self._counts.get(c.key, (0, 0.0))[0] for c in charges]
        bad = first_exceeded(charges, used)
        if bad is not None:
            raise exceeded(charges[bad], used[bad], now)

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        with self._lock:
            for key, delta in settle_deltas(reservation, tokens, cost_usd):
                if key in self._counts:
                    used, end = self._counts[key]
                    self._counts[key] = (used + delta, end)

    def restore(self, used: Mapping[str, tuple[int, float]]) -> None:
        """Add what the current windows already used before this process started ({window key:
        (amount, window end)}, see limits_restore), so a restart does not reset a spent budget."""
        with self._lock:
            for key, (amount, end) in used.items():
                self._counts[key] = (self._counts.get(key, (0, end))[0] + amount, end)

    def reconfigure(self, config: LimitsConfig) -> None:
        self.config = config

    def state(self) -> None:
        return None  # in memory: it never fails open

    async def usage(self, team: str, key_id: str, key_limits: TeamLimits | None = None) -> list[LimitUsage]:
        charges = plan_charges(self.config, team, key_id, 0, 0.0, self._clock(), key_limits=key_limits)
        with self._lock:
            return usage_from(charges, [self._counts.get(c.key, (0, 0.0))[0] for c in charges])

    async def aclose(self) -> None:
        return None

    def _sweep(self, now: float) -> None:
        if len(self._counts) > 10_000:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}


def build_limiter(config: LimitsConfig, redis_url: str | None) -> InProcessLimiter | RedisLimiter:
    """Redis-backed across replicas when REDIS_URL is set, else in-process."""
    if redis_url:
        from observability.limits_redis import RedisLimiter

        return RedisLimiter.from_url(redis_url, config)
    return InProcessLimiter(config)
