"""Rebuild the embedded limiter's current windows from the usage store at start-up, so a restart does
not hand a team a fresh minute, day or month: requests/tokens per minute and per-key budgets from
the raw records, team budgets from the day rollups (exact, and cheap however busy the month was)."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from observability.limits import plan_charges, window, window_key
from observability.limits_config import LimitsConfig
from observability.limits_inprocess import InProcessLimiter
from observability.stores import UsageStore
from observability.usage import UsageRecord

log = logging.getLogger(__name__)

Windows = dict[str, tuple[int, float]]  # window key -> (amount used, window end)
MAX_RECORDS = 200_000  # newest records read per team for per-key budgets; older ones are not counted


@dataclass(frozen=True)
class Restored:
    windows: int  # how many windows got a count
    records: int  # raw records read
    truncated: bool  # MAX_RECORDS was reached for a team: its per-key budgets may be under-counted


def _add(out: Windows, key: str, amount: int, end: float) -> None:
    if amount:
        out[key] = (out.get(key, (0, end))[0] + amount, end)


def windows_from_records(config: LimitsConfig, records: Iterable[UsageRecord], now: float) -> Windows:
    """What each current window holds from finished requests: every window but the team budgets
    (those come from the rollups). A refused request ("rejected") was never charged."""
    out: Windows = {}
    for record in records:
        if record.status == "rejected":
            continue
        for charge in plan_charges(config, record.team, record.key_id, record.total_tokens, record.cost_usd,
                                   record.time):
            if charge.window_end > now and not (charge.scope == "team" and charge.limit_name.startswith("usd")):
                _add(out, charge.key, charge.amount, charge.window_end)
    return out


def windows_from_day_costs(config: LimitsConfig, day_costs: Mapping[tuple[str, int], int], now: float) -> Windows:
    """Team USD/day and USD/month windows from {(team, UTC day start): nano-USD spent that day}."""
    out: Windows = {}
    for name in ("usd_per_day", "usd_per_month"):
        start, end = window(name, now)
        for (team, day), nano in day_costs.items():
            limits = config.teams.get(team, config.default_team)
            if getattr(limits, name) is not None and start <= day < end:
                _add(out, window_key("team", team, name, start), int(nano), end)
    return out


def _records_since(config: LimitsConfig, now: float) -> float:
    """The oldest record the per-minute windows and the per-key budgets need."""
    since = window("requests_per_minute", now)[0]
    for name in ("usd_per_day", "usd_per_month"):
        if any(getattr(limits, name) is not None for limits in config.keys.values()):
            since = min(since, window(name, now)[0])
    return since


def restore_windows(limiter: InProcessLimiter, store: UsageStore, now: float,
                    max_records: int = MAX_RECORDS) -> Restored:
    """Read the store and add what it holds for the current windows to `limiter` (call before serving)."""
    windows, restored = current_windows(limiter.config, store, now, max_records)
    limiter.restore(windows)
    return restored


def current_windows(config: LimitsConfig, store: UsageStore, now: float,
                    max_records: int = MAX_RECORDS) -> tuple[Windows, Restored]:
    """What the store holds for the current windows ({window key: (amount, window end)}), for any
    embedded limiter (one process's, or the supervisor's counts shared by its workers)."""
    month_start = window("usd_per_month", now)[0]
    day_costs = {(r.team, r.start): int(r.fields.get("cost_nusd", 0))
                 for r in store.rollups(None, "day", month_start, now + 1)}
    since, truncated, read = _records_since(config, now), False, 0
    windows = windows_from_day_costs(config, day_costs, now)
    for team in store.teams():  # one team at a time: the (team, time) index serves each query
        records = store.records(team, since, now + 1, limit=max_records)
        read, truncated = read + len(records), truncated or len(records) >= max_records
        for key, (amount, end) in windows_from_records(config, records, now).items():
            _add(windows, key, amount, end)
    restored = Restored(len(windows), read, truncated)
    if restored.truncated:
        log.warning("limits: only the newest %d usage records of a team were read; per-key budgets may be "
                    "under-counted", max_records)
    return windows, restored
