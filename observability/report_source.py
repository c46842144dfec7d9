"""Read what a report needs from a usage store: hour rollups for windows up to two days, day rollups
beyond, plus recent raw records for the TTFT scatter. The window is rounded out to whole periods."""
from __future__ import annotations

from observability.report import MAX_SINCE_S, HostedPrice, Report, build_report
from observability.rollups import period_start
from observability.stores import UsageStore

HOUR_ROLLUPS_UP_TO_S = 2 * 86400


def fetch_report(store: UsageStore, *, team: str | None, since_s: float, now: float,
                 hosted_price: HostedPrice | None = None, max_points: int = 2000) -> Report:
    """Report for one team (None: every team) over the last since_s seconds before now (at most
    MAX_SINCE_S: the stores would otherwise enumerate every empty period of a huge window)."""
    since_s = min(since_s, MAX_SINCE_S)
    period = "hour" if since_s <= HOUR_ROLLUPS_UP_TO_S else "day"
    since = period_start(now - since_s, period)
    rollups = store.rollups(team, period, since, now)
    records = store.records(team, since, now, limit=max_points)
    return build_report(rollups, team=team, since=since, until=now, hosted_price=hosted_price,
                        records=records, max_points=max_points)
