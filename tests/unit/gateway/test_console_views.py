"""The console's pure views: a key's budget status from the limiter's windows, an engine's polled state;
and the console's assets ship with the package (a page that cannot load is no console)."""
from __future__ import annotations

from datetime import UTC, datetime
from importlib.resources import files

from gateway.key_usage import key_budget_status
from gateway.routes.ui_api import engine_view
from observability.limits import LimitUsage
from policies.live import EngineSnapshot

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
