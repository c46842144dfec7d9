"""Rate limits and budgets: the pure window/charge math every limiter runs (the in-process one in
limits_inprocess.py, the Redis one in limits_redis.py atomically in Lua, the shared one in
limits_shared.py). No I/O.

Windows are fixed and UTC-aligned: requests and tokens per minute, USD per day and per month. The
estimate is charged at reserve(); settle() replaces it with the actuals in the same windows."""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote

from observability.limits_config import LIMIT_NAMES, LimitsConfig, TeamLimits
from observability.limits_protocol import LimitExceeded, LimitUsage, Reservation, WindowState

NANO = 1_000_000_000  # USD is counted in integer nano-dollars, so sums are exact
_UNITS = {"requests_per_minute": "requests/min", "tokens_per_minute": "tokens/min",
          "usd_per_day": "USD/day", "usd_per_month": "USD/month"}
# What a request adds to each limit's window: 0 one request, 1 its tokens, 2 its nano-USD (_amounts' order).
_UNIT = {"requests_per_minute": 0, "tokens_per_minute": 1, "usd_per_day": 2, "usd_per_month": 2}
USD_LIMITS = frozenset(("usd_per_day", "usd_per_month"))  # a set test: str.startswith costs ~1 k instructions


class Charge(NamedTuple):
    """One window a request is charged in (a tuple: built per window per request, ~1/4 of a frozen
    dataclass's cost)."""

    key: str  # "<scope>:<id>:<limit>:<window start>", the store's counter id
    scope: str  # "team" or "key"
    owner: str  # the team name or key id
    limit_name: str
    amount: int  # 1 request, N tokens or nano-USD
    limit: int
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


def _amounts(tokens: int, cost_usd: float) -> tuple[int, int, int]:
    """What a request adds to a window, by _UNIT: 1 request, its tokens, its nano-USD."""
    return 1, max(tokens, 0), max(round(cost_usd * NANO), 0)


def _amount(limit_name: str, tokens: int, cost_usd: float) -> int:
    return _amounts(tokens, cost_usd)[_UNIT[limit_name]]


def _scaled(limit_name: str, value: float) -> int:
    return round(value * NANO) if limit_name in USD_LIMITS else int(value)


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
            limit = UNCHECKED_LIMIT if scope in unchecked and name in USD_LIMITS else _scaled(name, value)
            charges.append(Charge(window_key(scope, owner, name, start), scope, owner, name,
                                  _amount(name, tokens, cost_usd), limit, end))
    return charges


class ChargePlans:
    """plan_charges for one limiter, its windows kept by team and key for the minute they were planned in:
    every window boundary is a whole minute, so the windows' keys, limits and ends are the same for all of a
    team's and key's requests in it, and a request's charges are its amounts laid on them (the keys' text,
    limits and window lookups made once a minute, not per request). A new config (a reload) plans anew."""

    MAX_PLANS = 10_000  # distinct (team, key, ...) in one minute; past it the cache starts again

    def __init__(self) -> None:
        self._minute = -1
        self._plans: dict[tuple[object, ...], tuple[LimitsConfig, tuple[tuple[str, str, str, str, int, float, int], ...]]] = {}

    def charges(self, config: LimitsConfig, team: str, key_id: str, tokens: int, cost_usd: float, now: float,
                unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> list[Charge]:
        """What plan_charges(config, team, key_id, tokens, cost_usd, now, unchecked, key_limits) returns."""
        minute = int(now // 60)
        if minute != self._minute or len(self._plans) >= self.MAX_PLANS:
            self._plans, self._minute = {}, minute
        which = (team, key_id, key_limits, frozenset(unchecked))
        plan = self._plans.get(which)
        if plan is None or plan[0] is not config:
            windows = tuple((c.key, c.scope, c.owner, c.limit_name, c.limit, c.window_end, _UNIT[c.limit_name])
                            for c in plan_charges(config, team, key_id, 0, 0.0, now, unchecked, key_limits))
            plan = self._plans[which] = (config, windows)
        amounts = _amounts(tokens, cost_usd)
        return [Charge(key, scope, owner, name, amounts[unit], limit, end)
                for key, scope, owner, name, limit, end, unit in plan[1]]


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


def raise_if_exceeded(charges: Sequence[Charge], used: Sequence[int], now: float) -> None:
    """LimitExceeded for the first charge that would go over its limit (first_exceeded), if any."""
    bad = first_exceeded(charges, used)
    if bad is not None:
        raise exceeded(charges[bad], used[bad], now)


def charged_reservation(request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                        charges: Sequence[Charge], used: Sequence[int], now: float) -> Reservation:
    """The reservation of `charges`, just added to windows that had used `used` before them."""
    return Reservation(request_id, team, key_id, tokens, cost_usd, tuple(c.key for c in charges),
                       usd_headroom(charges, used),
                       window_states(charges, [u + c.amount for c, u in zip(charges, used)], now))


def usd_headroom(charges: Sequence[Charge], used: Sequence[int]) -> tuple[tuple[str, float], ...]:
    """Per scope ("team", "key") with an enforced USD budget, the USD left in its tightest budget
    window once these charges are added (empty: no budget enforced)."""
    left: dict[str, int] = {}
    for c, u in zip(charges, used):
        if c.limit_name in USD_LIMITS and c.limit != UNCHECKED_LIMIT:
            room = c.limit - u - c.amount
            left[c.scope] = min(room, left.get(c.scope, room))
    return tuple((scope, max(room, 0) / NANO) for scope, room in left.items())


def _human(limit_name: str, value: float) -> str:
    return f"${value / NANO:.4f}" if limit_name in USD_LIMITS else str(int(value))


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
    actual, held = _amounts(tokens, cost_usd), _amounts(reservation.tokens, reservation.cost_usd)
    for key in reservation.window_keys:
        unit = _UNIT[key.rsplit(":", 2)[1]]
        if unit and (delta := actual[unit] - held[unit]):  # a request is a request: unit 0 never settles
            deltas.append((key, delta))
    return deltas


def usage_from(charges: Sequence[Charge], used: Sequence[int]) -> list[LimitUsage]:
    def unscale(name: str, v: int) -> float:
        return v / NANO if name in USD_LIMITS else float(v)

    return [LimitUsage(c.scope, c.owner, c.limit_name, unscale(c.limit_name, u), unscale(c.limit_name, c.limit),
                       c.window_end) for c, u in zip(charges, used)]
