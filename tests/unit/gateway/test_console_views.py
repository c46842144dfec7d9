"""The console's pure views: a key's budget status from the limiter's windows, an engine's polled state,
the last minute's numbers; and the console's assets ship with the package (a page that cannot load is no
console)."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from importlib.resources import files

from gateway.key_usage import key_budget_status
from gateway.routes.ui_api import engine_view, last_minute
from observability.limits_protocol import LimitUsage
from policies.live import EngineSnapshot
from tests.unit.observability.conftest import record

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()  # half of the UTC day gone


def test_a_keys_budget_status_is_its_key_windows_with_a_forecast_at_this_pace() -> None:
    usages = [LimitUsage("team", "ops", "usd_per_day", 9.0, 100.0, NOON + 43200),  # the team's: not the key's
              LimitUsage("key", "k1", "requests_per_minute", 3, 10, NOON + 60),
              LimitUsage("key", "k1", "usd_per_day", 1.5, 5.0, NOON + 43200)]
    status = key_budget_status(usages, NOON)
    assert status == {"day": {"spent_usd": 1.5, "limit_usd": 5.0, "forecast_usd": 3.0}, "month": None}


def test_an_engines_view_says_how_much_kv_is_used_and_what_queues() -> None:
    snap = EngineSnapshot(taken_at=10.0, model="m", num_blocks_total=200, num_blocks_free=50, num_running=4,
                          num_waiting=7)
    view = engine_view(snap, now=12.5)
    assert view is not None
    assert (view["kv_used"], view["running"], view["waiting"], view["age_s"]) == (0.75, 4, 7, 2.5)
    assert engine_view(EngineSnapshot(taken_at=0.0), now=1.0)["kv_used"] is None  # type: ignore[index]
    assert engine_view(None, now=1.0) is None


def test_the_console_page_and_script_ship_as_package_data() -> None:
    ui = files("gateway") / "ui"
    page, script = (ui / "console.html").read_text(), (ui / "console.js").read_text()
    assert '<script src="/console/console.js"></script>' in page and "<script>" not in page  # no inline script
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script  # values go in as text only


def test_the_last_minute_counts_every_request_and_times_only_the_answered_ones() -> None:
    ok = [replace(record(), backend=b, ttft_s=t, status="ok") for b, t in (("gpu", 0.1), ("gpu", 0.3), ("up", 0.2))]
    failed = replace(record(), backend="up", ttft_s=9.0, status="error")
    now = last_minute([*ok, failed], local={"gpu"}, window_s=60.0)
    assert (now["requests"], now["share_local"], now["errors"], now["rejected"]) == (4, 0.5, 1, 0)
    assert now["requests_per_s"] == 4 / 60 and now["ttft_p50_s"] == 0.2 and now["ttft_p95_s"] == 0.3
    assert last_minute([], local=set())["share_local"] is None
