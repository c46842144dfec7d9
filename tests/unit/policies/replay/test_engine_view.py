"""The gateway's view of each engine when it routed a request (EngineView): kept with the usage record
through the ledger and read back by the replay, which checks its own simulated gateway against it."""
from __future__ import annotations

from pathlib import Path

from observability.sqlite_store import SqliteStore
from observability.stores import decode_record, encode_record
from observability.usage import EngineView, UsageRecord
from policies.live import EngineSnapshot, InFlight, LiveState
from policies.perf_model import EngineModel
from policies.replay.recording_fit import fit_state_poll
from policies.replay.simulator import ReplaySetup
from policies.replay.traffic import Recorded, TrafficRecord, read_ledger
from policies.replay.view_check import replay_checked
from policies.route_view import engine_views
from tests.unit.policies.replay.support import KV_FIT, PERF

T0 = 1_800_000_000.0
VIEW = {"local": EngineView(age_s=0.18, waiting=3, running=5, free_blocks=90, queued=2, free=80, polled_s=-0.1)}


def _record(i: int, view: dict[str, EngineView]) -> UsageRecord:
    return UsageRecord(
        request_id=f"r{i}", time=T0 + i, team="a", key_id="k", model_alias="chat", backend="local", model="smollm2",
        rule="fit", status="ok", http_status=200, stream=True, prompt_tokens=100, completion_tokens=10,
        estimated_prompt_tokens=100, estimated_completion_tokens=10, usage_source="upstream", cost_usd=0.0,
        ttft_s=0.1, itl_p50_s=0.01, itl_p95_s=0.01, itl_max_s=0.01, e2e_s=0.2, engine_view=view)


def test_the_view_round_trips_through_the_ledger_into_the_replays_traffic(tmp_path: Path) -> None:
    assert decode_record(encode_record(_record(0, VIEW))).engine_view == VIEW
    store = SqliteStore(tmp_path / "usage.sqlite3")
    store.write_batch([_record(0, VIEW), _record(1, {})])
    store.close()
    traffic = read_ledger(tmp_path / "usage.sqlite3", T0 - 1, T0 + 10)
    assert [r.recorded.view for r in traffic if r.recorded is not None] == [VIEW, {}]


def test_an_unreadable_stored_view_is_left_out_not_an_error() -> None:
    data = _record(0, VIEW).to_dict()
    data["engine_view"] = {"local": {"age_s": "soon"}, "other": dict(data["engine_view"]["local"])}
    assert UsageRecord.from_dict(data).engine_view == {"other": VIEW["local"]}


def test_the_view_is_what_the_router_estimated_from_its_poll_and_its_own_requests() -> None:
    snap = EngineSnapshot(taken_at=10.0, num_blocks_total=100, num_blocks_free=90, num_running=2, num_waiting=1,
                          max_num_seqs=2)
    live = LiveState(10.25, {"local": snap}, reserved_blocks={"local": 30},
                     in_flight={"local": InFlight(num=4, num_started_since=3)})
    # Queue: R + W + S − C = 2 + 1 + 3 − 2 (three sent since the poll, the slots full); KV: 100 − 30 held.
    assert engine_views(live, ["local", "absent"]) == {"local": EngineView(0.25, 1, 2, 90, 4, 70)}
    # Routed 50 ms after the request arrived: that poll was taken 0.2 s before the arrival.
    assert engine_views(live, ["local"], routed_s=0.05)["local"].polled_s == -0.2
    stale = LiveState(12.5, {"local": snap})
    assert engine_views(stale, ["local"])["local"].queued is None  # older than stale_after_s: unknown


def test_calibration_fits_the_poll_period_from_the_views_ages() -> None:
    records = [TrafficRecord(T0 + i, "a", "chat", 10, 5, recorded=Recorded(
        "local", "ok", 0.0, 0.1, 0.2, {"local": EngineView(0.1 + 0.02 * (i % 3), 0, 0, 10, 0, 10)}))
        for i in range(9)]
    fitted = fit_state_poll(records, "local", EngineModel())
    assert fitted.state_poll_s == 0.24 and fitted.source.endswith("polled every 0.24 s (its views)")  # 2 × mean age
    assert fit_state_poll(records[:3], "local", EngineModel()).state_poll_s == 0.0  # too few: unchanged


def test_a_forced_replay_sends_each_request_where_the_recording_did_and_keeps_its_own_choice() -> None:
    full = {"local": EngineView(0.1, 9, 1, 90, 9, 90)}  # the real gateway saw 9 waiting: it spilled
    routes = ["openai", "local", "openai"]
    traffic = [TrafficRecord(T0 + 5.0 * i, "a", "chat", 100, 10, recorded=Recorded(b, "ok", 0.0, 0.1, 0.2, full))
               for i, b in enumerate(routes)]
    check = replay_checked(KV_FIT, traffic, ReplaySetup(PERF, {}, 0), forced=True)
    assert check.outcomes.backend == routes
    assert check.chosen == ("local", "local", "local")  # an idle engine in the replay: it fits
    assert check.on_recorded == ("openai", "openai", "openai")  # decide() on the recorded view spills
    assert check.views[1]["local"].queued == 0
    own = replay_checked(KV_FIT, traffic, ReplaySetup(PERF, {}, 0))
    assert own.outcomes.backend == ["local"] * 3
