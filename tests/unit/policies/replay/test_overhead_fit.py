"""The local path's time outside the engine's steps: a constant plus the wait in a one-at-a-time front end.
A recording made by a known engine behind a known front end gives both back; the replay applies them."""
from __future__ import annotations

from dataclasses import replace

import pytest

from policies.perf_model import PerfModel
from policies.replay.overhead_fit import engine_ttfts, fit_overhead, frontend_waits, request_overheads
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import Recorded, TrafficRecord
from tests.unit.policies.replay.support import ALL_LOCAL, FIXED_HOSTED, SIMPLE_ENGINE

T0 = 1_800_000_000.0
FIXED_S, SERVICE_S = 0.05, 0.02  # the front end clears 50 requests/s


def test_a_front_end_backs_up_when_requests_come_faster_than_it_clears_them() -> None:
    assert frontend_waits([0.0, 0.0, 0.0, 1.0], 0.1) == pytest.approx([0.0, 0.1, 0.2, 0.0])
    assert frontend_waits([0.0, 0.05, 0.2], 0.1) == pytest.approx([0.0, 0.05, 0.0])
    model = replace(SIMPLE_ENGINE, request_overhead_s=FIXED_S, frontend_service_s=SERVICE_S)
    assert request_overheads(model, [0.0, 0.0, 5.0]) == pytest.approx([0.07, 0.09, 0.07])
    assert request_overheads(replace(SIMPLE_ENGINE, request_overhead_s=0.3), [0.0, 0.0]) == [0.3, 0.3]


def _recording() -> list[TrafficRecord]:
    """Quiet (one local request a second) then a burst at 100/s (local and hosted alternating): measured
    TTFT = the engine's own + 50 ms + the front end's 20 ms a request and its wait behind the burst."""
    times = [T0 + i for i in range(12)] + [T0 + 20 + 0.01 * i for i in range(40)]
    backends = ["local"] * 12 + ["local" if i % 2 else "openai" for i in range(40)]
    plain = [TrafficRecord(t, "t", "chat", 50 + 7 * (i % 5), 8) for i, t in enumerate(times)]
    local = [r for r, b in zip(plain, backends) if b == "local"]
    own = dict(zip((r.time for r in local), engine_ttfts(local, SIMPLE_ENGINE)))
    overheads = request_overheads(replace(SIMPLE_ENGINE, request_overhead_s=FIXED_S, frontend_service_s=SERVICE_S),
                                  times)
    out = []
    for r, b, extra in zip(plain, backends, overheads):
        ttft = own[r.time] + extra if b == "local" else 0.4
        out.append(replace(r, recorded=Recorded(b, "ok", 0.0, ttft, ttft + 0.5)))
    return out


def test_a_known_front_end_is_fitted_back_from_the_recording() -> None:
    records = _recording()
    fitted = fit_overhead(records, "local", SIMPLE_ENGINE)
    assert fitted.request_overhead_s == pytest.approx(FIXED_S, abs=1e-6)
    assert fitted.frontend_service_s == pytest.approx(SERVICE_S, abs=1e-6)
    assert "front end 20.0 ms a request (50 requests/s)" in fitted.source
    assert fitted.prefill_fixed_s == SIMPLE_ENGINE.prefill_fixed_s  # the step times are not its business
    # Without the burst the front end never backs up: a constant explains it all.
    quiet = fit_overhead(records[:12], "local", SIMPLE_ENGINE)
    assert quiet.request_overhead_s + quiet.frontend_service_s == pytest.approx(FIXED_S + SERVICE_S, abs=1e-6)
    assert fit_overhead(records[:5], "local", SIMPLE_ENGINE) is SIMPLE_ENGINE  # too few: unchanged


def test_the_replay_adds_each_requests_own_overhead_without_holding_the_engine() -> None:
    traffic = [TrafficRecord(T0, "t", "chat", 100, 10, max_tokens=10) for _ in range(3)]
    traffic.append(TrafficRecord(T0 + 5, "t", "chat", 100, 10, max_tokens=10))

    def run(engine: object) -> tuple[list[float | None], list[float | None], float]:
        out = replay(ALL_LOCAL, traffic, ReplaySetup(PerfModel({}, {}, engine, FIXED_HOSTED), {}, 0))  # type: ignore[arg-type]
        return out.ttft, out.e2e, out.engine_busy_s["local"]

    plain_ttft, plain_e2e, plain_busy = run(SIMPLE_ENGINE)
    ttft, e2e, busy = run(replace(SIMPLE_ENGINE, request_overhead_s=FIXED_S, frontend_service_s=SERVICE_S))
    extra = [0.07, 0.09, 0.11, 0.07]  # the burst of three waits 0, 20 and 40 ms; the late one finds it clear
    for i, more in enumerate(extra):
        assert ttft[i] == pytest.approx((plain_ttft[i] or 0.0) + more)
        assert e2e[i] == pytest.approx((plain_e2e[i] or 0.0) + more)
    assert busy == pytest.approx(plain_busy)
