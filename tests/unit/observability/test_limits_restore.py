"""The embedded limiter rebuilt from a real SQLite ledger file: a restarted process starts with what
the current minute, day and month already used (no sockets)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import LimitExceeded
from observability.limits_restore import restore_windows
from observability.sqlite_store import SqliteStore
from tests.unit.observability.conftest import T0, record

NOW = T0 + 10  # same UTC minute, day and month as T0 (2026-11-18 03:06:40)
DAY = 86400.0


def _limiter(store: SqliteStore, config: LimitsConfig, max_records: int = 200_000) -> InProcessLimiter:
    limiter = InProcessLimiter(config, clock=lambda: NOW)
    restore_windows(limiter, store, NOW, max_records=max_records)
    return limiter


def _refused(limiter: InProcessLimiter, team: str = "alpha", key_id: str = "key-a", tokens: int = 1,
             cost: float = 0.01) -> str | None:
    try:
        asyncio.run(limiter.reserve("probe", team, key_id, tokens, cost))
    except LimitExceeded as exc:
        return exc.limit
    return None


def _used(limiter: InProcessLimiter, name: str, team: str = "alpha", key_id: str = "key-a") -> float:
    usage = asyncio.run(limiter.usage(team, key_id))
    return next(u.used for u in usage if u.limit_name == name and u.scope == "team")


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "usage.sqlite3")


def test_a_spent_day_budget_stays_spent(store: SqliteStore) -> None:
    store.write_batch([record(cost_usd=0.6), record(cost_usd=0.5),
                       record(cost_usd=9.0, time=T0 - DAY),  # yesterday: another day's window
                       record(cost_usd=9.0, team="beta"),  # another team's spend
                       record(cost_usd=0.0, status="rejected", prompt_tokens=0)])
    config = LimitsConfig(teams={"alpha": TeamLimits(usd_per_day=1.0), "beta": TeamLimits(usd_per_day=100.0)})
    assert _refused(InProcessLimiter(config, clock=lambda: NOW)) is None  # a fresh process: what went wrong
    limiter = _limiter(store, config)
    assert _used(limiter, "usd_per_day") == pytest.approx(1.1)
    assert _refused(limiter) == "usd_per_day"
    assert _refused(limiter, team="beta") is None


def test_month_and_minute_windows(store: SqliteStore) -> None:
    store.write_batch([record(cost_usd=3.0, time=T0 - 5 * DAY),  # earlier this month
                       record(cost_usd=4.0, time=T0 - 30 * DAY),  # last month
                       record(cost_usd=0.0, time=T0 - 60, prompt_tokens=500, completion_tokens=0),  # last minute
                       *[record(cost_usd=0.0, prompt_tokens=30, completion_tokens=10) for _ in range(3)]])
    config = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=10, tokens_per_minute=1000,
                                                     usd_per_day=100.0, usd_per_month=3.005)})
    limiter = _limiter(store, config)
    assert _used(limiter, "usd_per_month") == pytest.approx(3.0)
    assert _used(limiter, "usd_per_day") == 0
    assert (_used(limiter, "requests_per_minute"), _used(limiter, "tokens_per_minute")) == (3, 120)
    assert _refused(limiter) == "usd_per_month"


def test_a_key_budget_is_rebuilt_from_that_keys_records(store: SqliteStore) -> None:
    store.write_batch([record(key_id="k1", cost_usd=0.4, time=T0 - 3600), record(key_id="k2", cost_usd=5.0)])
    config = LimitsConfig(keys={"k1": TeamLimits(usd_per_day=0.4)})
    limiter = _limiter(store, config)
    assert _refused(limiter, key_id="k1") == "usd_per_day"
    assert _refused(limiter, key_id="k2") is None


def test_requests_per_minute_survive_a_restart(store: SqliteStore) -> None:
    store.write_batch([record(status=status) for status in ("ok", "error", "aborted")])
    limiter = _limiter(store, LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=3)}))
    assert _refused(limiter) == "requests_per_minute"


def test_a_bounded_read_says_it_was_cut(store: SqliteStore) -> None:
    store.write_batch([record(key_id="k1", cost_usd=0.1) for _ in range(3)])
    config = LimitsConfig(keys={"k1": TeamLimits(usd_per_day=1.0)})
    restored = restore_windows(InProcessLimiter(config, clock=lambda: NOW), store, NOW, max_records=2)
    assert restored.truncated and restored.records == 2
    assert not restore_windows(InProcessLimiter(config, clock=lambda: NOW), store, NOW).truncated
