"""The replay's gateway learns a request's end when it ends, as the real one does when its stream closes:
the router's queue estimate (LiveState.num_waiting) counts what this gateway sent since the last poll and
has not seen end, so ends learned late read as a queue and spill requests the real gateway kept local."""
from __future__ import annotations

from policies.decision import RequestFacts, RouteDecision
from policies.live import LiveState
from policies.replay.simulator import ReplayRun, ReplaySetup, replay
from policies.replay.traffic import TrafficRecord
from tests.unit.policies.replay.support import PERF, policy

T0 = 1_800_000_000.0
# One poll at the first arrival and none after it within the test (a slow poller; the state stays fresh).
SLOW_POLLS = policy("- {name: fit, strategy: kv_fit, local: [local], spill: [openai]}\n",
                    "health: {poll_interval_s: 5.0, stale_after_s: 10.0}\n")


def test_requests_that_ended_before_an_arrival_are_not_counted_as_waiting() -> None:
    # A burst of five (the fifth sees 4 of ours waiting, at the rule's limit, and stays local) done by 0.12 s
    # (one 0.1 s prefill step for all five, one 0.01 s decode step), then two more after a gap: they find the
    # engine idle and nothing of this gateway's in flight. The rule spills once more than 4 wait. Before,
    # an engine was stepped only when a request was sent to it, after routing: the burst's ends were not
    # seen when the sixth was routed, which read 5 waiting and spilled.
    traffic = [TrafficRecord(T0 + 0.001 * i, "t", "chat", 20, 2, max_tokens=2) for i in range(5)]
    traffic += [TrafficRecord(T0 + 1.0 + 0.5 * i, "t", "chat", 20, 2, max_tokens=2) for i in range(2)]
    seen: list[int | None] = []

    def queue(run: ReplayRun, i: int, facts: RequestFacts, live: LiveState, decision: RouteDecision) -> RouteDecision:
        seen.append(live.num_waiting("local"))
        return decision

    out = ReplayRun(SLOW_POLLS, traffic, ReplaySetup(PERF, {}, 0), queue).run()
    assert out.backend == ["local"] * 7
    assert all(e is not None and e < 0.5 for e in out.e2e)  # the burst's had ended long before the sixth came
    # What the router saw: the burst's own, then nothing. (Also fixed: the request sent at the poll's instant
    # was counted as sent since the poll and, at its end, as started before it: a phantom 1 after it ended.)
    assert seen == [0, 1, 2, 3, 4, 0, 0]


def test_requests_still_in_flight_are_counted_and_spill() -> None:
    # The same requests 0.01 s apart: all are in flight when the later ones arrive, so the sixth spills.
    traffic = [TrafficRecord(T0 + 0.01 * i, "t", "chat", 20, 2, max_tokens=2) for i in range(8)]
    out = replay(SLOW_POLLS, traffic, ReplaySetup(PERF, {}, 0))
    assert out.backend == ["local"] * 5 + ["openai"] * 3
