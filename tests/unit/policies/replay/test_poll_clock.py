"""The replay's gateway polling its engines on a clock of its own (`replay --poll-clock`), as the real
poller does: a burst inside one poll interval is routed on the state polled before it."""
from __future__ import annotations

from dataclasses import replace

import pytest

from observability.usage import EngineView
from policies.perf_model import HostedModel, PerfModel
from policies.replay.poll_clock import period_clock, recorded_polls
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import Recorded, TrafficRecord
from tests.unit.policies.replay.support import FIXED_HOSTED, KV_FIT, SIMPLE_ENGINE

T0 = 1_800_000_000.0
# Ten small requests 5 ms apart: the engine's first prefill step (0.1 s) is still running when the last
# arrives, so the others wait in its queue (the rule spills once more than 4 wait). KV is no limit.
BURST = [TrafficRecord(T0 + 0.005 * i, "t", "chat", 20, 10, max_tokens=10) for i in range(10)]


def _setup(poll_s: float, seed: int) -> ReplaySetup:
    engine = replace(SIMPLE_ENGINE, state_poll_s=poll_s)
    return ReplaySetup(PerfModel({}, {}, engine, FIXED_HOSTED), {}, seed, poll_clock="period")


def test_a_burst_inside_one_poll_interval_spills_on_the_stale_view_as_on_a_fresh_one() -> None:
    # A seed whose poll clock polls before the burst and next well after it (its phase is the seed's).
    seed = next(s for s in range(100) if period_clock(0.0, 1.0, s, "local").next + 1.0 > 0.2)
    stale = replay(KV_FIT, BURST, _setup(1.0, seed))
    # The poll saw an idle engine and none of the burst, but the gateway counts what it sent since as
    # waiting (LiveState.num_waiting): the sixth sees 5 and spills. Before, a sent request counted only
    # beyond the engine's 64 slots, and all ten went local onto a queue of 9.
    assert stale.backend == ["local"] * 5 + ["openai"] * 5
    fresh = replay(KV_FIT, BURST, _setup(0.001, seed))
    # Polled every millisecond: the sixth sees 5 waiting too — the engine publishes its state between steps,
    # so while the first prefill step runs it still counts the first as waiting (before, the replay's view
    # had it running: the sixth saw 4 and went local, onto a queue of 5).
    assert fresh.backend == stale.backend
    assert (max(stale.queue_max["local"]), max(fresh.queue_max["local"])) == (4, 4)


def test_the_poll_clock_is_deterministic_for_a_seed_and_its_phase_follows_the_seed() -> None:
    hosted = HostedModel(ttft_p50_s=0.4, ttft_p95_s=1.5)
    traffic = [TrafficRecord(T0 + 0.05 * i, "t", "chat", 50 + 37 * i % 400, 5 + 13 * i % 90) for i in range(300)]
    perf = PerfModel({}, {}, replace(SIMPLE_ENGINE, state_poll_s=0.3), hosted)
    a, b = (replay(KV_FIT, traffic, ReplaySetup(perf, {}, 3, poll_clock="period")) for _ in range(2))
    assert (a.backend, a.ttft, a.e2e) == (b.backend, b.ttft, b.e2e)
    assert period_clock(0.0, 0.3, 3, "local").next != period_clock(0.0, 0.3, 4, "local").next
    clock = period_clock(0.0, 0.3, 3, "local")
    assert -0.3 <= clock.next <= 0.0 and clock.period == 0.3  # it had polled once before the first arrival


# The same ten 10 ms apart: the first prefill step (0 → 0.1 s) still runs when the burst ends.
SPREAD = [replace(r, time=T0 + 0.01 * i) for i, r in enumerate(BURST)]


def _routed_on(polls: list[float], first_seen: list[int], dated: bool = True) -> list[TrafficRecord]:
    """SPREAD as a recording whose request i was routed on the last of `polls` seen by then (the gateway saw
    poll k from request first_seen[k] on); `dated`: views that say when their poll was taken."""
    out = []
    for i, r in enumerate(SPREAD):
        poll = polls[max(k for k, first in enumerate(first_seen) if first <= i)]
        view = EngineView(round(r.time - poll, 4), 0, 0, 100, 0, 100, round(poll - r.time, 4) if dated else None)
        out.append(replace(r, recorded=Recorded("local", "ok", 0.0, 0.1, 0.2, {"local": view})))
    return out


def test_the_recorded_clock_polls_when_the_views_say_the_real_gateway_did() -> None:
    # The real gateway polled 0.1 s before the burst and 30 ms into it.
    polls = [T0 - 0.1, T0 + 0.03]
    traffic = _routed_on(polls, [0, 7])
    found = [x for pair in recorded_polls(traffic, "local") for x in pair]
    assert found == pytest.approx([T0 - 0.1, T0, T0 + 0.03, T0 + 0.07], abs=1e-3)  # (taken, seen from)
    # Views from before polled_s: the poll's time from the age (the same here: routed at arrival).
    assert recorded_polls(_routed_on(polls, [0, 7], False), "local") == recorded_polls(traffic, "local")
    out = replay(KV_FIT, traffic, replace(_setup(1.0, 0), poll_clock="recorded"))
    # On the first poll (an idle engine) it counts all it sent since: the sixth sees 5 waiting and spills, and
    # the seventh. The second poll shows 3 waiting (the first, still in the prefill step that began with it,
    # as the engine counts it, and the next two): with the one sent since it, the eighth sees 4 and goes
    # local; the last two see 5 and spill.
    assert out.backend == ["local"] * 5 + ["openai"] * 2 + ["local"] + ["openai"] * 2
    # The same poll, read late by a busy gateway: only the last one is routed on it, and goes local.
    late = replay(KV_FIT, _routed_on(polls, [0, 9]), replace(_setup(1.0, 0), poll_clock="recorded"))
    assert late.backend == ["local"] * 5 + ["openai"] * 4 + ["local"]
