"""The engine queue as the router sees it: the polled count corrected by what this gateway sent and
finished since the poll (LiveState.num_waiting), and kv_fit's "queue is short" check reading it."""
from __future__ import annotations

import textwrap
from types import MappingProxyType

from policies.decide import decide
from policies.engine_state import parse_engine_state
from policies.holds import HoldBook
from policies.live import InFlight, LiveState
from policies.loader import load_policy
from policies.router import PolicyRouter

from .support import NOW, compiled, engine, facts, live, local_and_openai

POLICY = "version: 1\n" + local_and_openai("max_waiting: 2",
                                           openai='base_url: "http://127.0.0.1:9/v1"') + """\
rules:
  - name: local-first
    strategy: kv_fit
    local: [local]
    spill: [openai]
"""


def _state(snap_kw: dict[str, int], flight: InFlight | None = None) -> LiveState:
    snap = engine(waiting=snap_kw.get("waiting", 0), running=snap_kw.get("running", 0),
                  max_num_seqs=snap_kw.get("slots", 0), max_waiting=snap_kw.get("limit", 0))
    return live({"local": snap}, in_flight={"local": flight} if flight is not None else None)


def test_without_requests_of_ours_the_polled_queue_stands() -> None:
    assert _state({"waiting": 3, "running": 2, "slots": 2}).num_waiting("local") == 3
    assert _state({"waiting": 3, "running": 2}).num_waiting("local") == 3  # slots unknown (vLLM)
    assert live({}).num_waiting("local") is None  # no state: unknown, not empty


def test_a_burst_sent_since_an_idle_poll_queues_whether_or_not_slots_are_free() -> None:
    # The case: the poll said 0 waiting while 8 requests were on their way. They all count as
    # waiting until a poll shows them admitted: the engine admits prompts only as its per-step token
    # budget allows (64 prompt tokens a step on CPU), which fills long before its slots do.
    assert _state({"slots": 2}, InFlight(num=8, num_started_since=8)).num_waiting("local") == 8
    assert _state({"slots": 64}, InFlight(num=2, num_started_since=2)).num_waiting("local") == 2
    # The estimate grows with each one sent (the old one stayed at 0 until 64 slots were full).
    assert [_state({"slots": 64}, InFlight(num=n, num_started_since=n)).num_waiting("local")
            for n in range(1, 6)] == [1, 2, 3, 4, 5]
    # Slots unknown (vLLM): the same.
    assert _state({}, InFlight(num=8, num_started_since=8)).num_waiting("local") == 8
    # Ours from before the poll that it shows running (3 of 8): the rest still wait, whatever it says.
    assert _state({"running": 3}, InFlight(num=8, num_started_since=0)).num_waiting("local") == 5


def test_a_poll_that_shows_our_requests_retires_them_from_the_estimate() -> None:
    # 5 sent since an idle poll; the next poll (taken after they started) shows 3 running and 2 waiting:
    # they are no longer "since" (the hold book counts against the new poll's time), so 2, not 2 + 5.
    assert _state({"slots": 64}, InFlight(num=5, num_started_since=5)).num_waiting("local") == 5
    assert _state({"slots": 64, "running": 3, "waiting": 2}, InFlight(num=5)).num_waiting("local") == 2


def test_the_queued_prefill_work_counts_ours_sent_since_at_their_own_size() -> None:
    # 3 of ours sent since the poll (900 prompt tokens in all) behind 2 the poll showed waiting (sizes
    # unknown: taken to be like the new request's 50): 2 × 50 + 900, whatever slots are free.
    state = _state({"waiting": 2, "slots": 64}, InFlight(num=3, num_started_since=3, prompt_tokens_since=900))
    assert state.queued_prompt_tokens("local", 50) == 1000
    # The burst grows it with each one sent.
    assert [_state({"slots": 64}, InFlight(num=n, num_started_since=n, prompt_tokens_since=300 * n))
            .queued_prompt_tokens("local", 50) for n in range(4)] == [0, 300, 600, 900]
    # Sizes not known (a caller that passed none): every one taken to be like the new request.
    assert _state({"slots": 64}, InFlight(num=3, num_started_since=3)).queued_prompt_tokens("local", 50) == 150
    # A poll that shows them: counted once, from the poll (none is "since" any more).
    assert _state({"waiting": 3, "slots": 64}, InFlight(num=3)).queued_prompt_tokens("local", 50) == 150
    assert live({}).queued_prompt_tokens("local", 50) is None


def _busy(running: int, waiting: int, sent: int, tokens: int, first_ago: float) -> LiveState:
    """An engine polled prefilling at 1000 tokens/s; `sent` of ours since, the first `first_ago` s ago."""
    snap = engine(running=running, waiting=waiting, prefill_tps=1000.0, max_num_seqs=64)
    return live({"local": snap}, in_flight={"local": InFlight(sent, sent, 0, tokens, NOW - first_ago)})


def test_an_engine_busy_at_the_poll_works_off_ours_sent_since_at_its_prefill_rate() -> None:
    # Three of 100 tokens: 50 ms after the first, 50 tokens done (all three still wait); 250 ms, one is
    # left; 500 ms, none: a stream the engine keeps up with does not read as a queue.
    assert [_busy(2, 0, 3, 300, ago).num_waiting("local") for ago in (0.05, 0.25, 0.5)] == [3, 1, 0]
    assert [_busy(2, 0, 3, 300, ago).queued_prompt_tokens("local", 100) for ago in (0.05, 0.25, 0.5)] == [250, 50, 0]
    # The polled queue ahead (2, taken to be like ours) is worked off first: at 250 ms 50 of ours are done.
    assert _busy(2, 2, 3, 300, 0.25).num_waiting("local") == 2 + 3
    # An engine idle at the poll: its rate is not current, so a burst into it keeps counting until a poll.
    assert _busy(0, 0, 3, 300, 5.0).num_waiting("local") == 3


def test_the_hold_book_retires_what_a_newer_poll_has_seen() -> None:
    book = HoldBook()
    for i in range(4):  # a burst of four 100-token prompts between two polls
        book.add("local", 1, NOW - 0.4 + 0.05 * i, prompt_tokens=100)
    old, new = engine(age=0.5), engine(age=0.32)  # polled before the burst; polled after its first two
    assert book.in_flight({"local": old})["local"] == InFlight(4, 4, 0, 400, NOW - 0.4)
    assert book.in_flight({"local": new})["local"] == InFlight(4, 2, 0, 200, NOW - 0.3)


def test_other_clients_requests_in_the_snapshot_are_counted_with_ours_since() -> None:
    # 2 slots taken by others (not ours) and 1 of theirs waiting; 3 of ours sent since: all wait.
    state = _state({"running": 2, "waiting": 1, "slots": 2}, InFlight(num=3, num_started_since=3))
    assert state.num_waiting("local") == 4


def test_our_requests_that_ended_since_the_poll_let_waiting_ones_run() -> None:
    state = _state({"running": 2, "waiting": 3, "slots": 2}, InFlight(num=3, num_ended_since=2))
    assert state.num_waiting("local") == 1
    assert _state({"running": 2, "waiting": 3, "slots": 2},
                  InFlight(num=5, num_ended_since=5)).num_waiting("local") == 3  # never below ours beyond slots


def test_hold_book_counts_requests_against_the_snapshot_time() -> None:
    book = HoldBook()
    snap = engine(age=0.5)  # taken at NOW - 0.5
    before = book.add("local", 1, NOW - 1.0)
    book.add("local", 1, NOW - 0.7)
    book.add("local", 1, NOW - 0.2)  # after the poll
    book.release(before, NOW - 0.1)  # ended after the poll
    book.release(book.add("local", 1, NOW - 0.3), NOW - 0.05)  # started and ended since: in neither count
    book.add("openai", 1, NOW)  # no snapshot: only counted
    flights = book.in_flight({"local": snap})
    assert flights["local"] == InFlight(num=2, num_started_since=1, num_ended_since=1, first_started_since=NOW - 0.2)
    assert flights["openai"] == InFlight(num=1)
    assert dict(HoldBook().in_flight({"local": snap})) == {}


def test_kv_fit_spills_on_our_in_flight_requests_before_the_next_poll() -> None:
    policy = compiled(POLICY)
    request = facts(blocks={"local": 10})

    def targets(flight: InFlight, **snap: int) -> tuple[list[str], str]:
        decision = decide(policy, request, _state({"slots": 1, **snap}, flight))
        return [t.backend for t in decision.targets], decision.reason

    assert targets(InFlight(num=2, num_started_since=2))[0] == ["local", "openai"]  # 2 wait (≤ 2)
    backends, reason = targets(InFlight(num=3, num_started_since=3))  # a free slot admits none of them
    assert backends == ["openai"] and "queue 3 > 2" in reason
    # Never send what the engine's own admission would refuse (503), whatever the policy allows.
    backends, reason = targets(InFlight(num=2, num_started_since=2), limit=1)
    assert backends == ["openai"] and "engine's limit of 1" in reason


def test_router_counts_what_it_sent_until_it_ends() -> None:
    router = PolicyRouter(load_policy(textwrap.dedent(POLICY), "p.yaml", {}), price_table={},
                          clock=lambda: NOW, wall_clock=lambda: 0.0)
    router.poller.snapshots = MappingProxyType({"local": engine(age=0.1, max_num_seqs=1)})
    body = {"model": "chat", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}

    def route() -> list[str]:
        return [t.backend for t in router.decider.route(router.decider.build_facts(body, "default")).targets]

    holds = []
    for _ in range(3):  # sent since the poll, they all wait: the queue is still "short" (≤ 2)
        assert route() == ["local", "openai"]
        holds.append(router.live.reserve("local", router.decider.build_facts(body, "default")))
    assert route() == ["openai"]  # 3 waiting: the next one spills, no poll needed
    router.live.release(holds.pop())
    assert route() == ["local", "openai"]


def test_engine_state_carries_the_slots_and_the_engine_queue_limit() -> None:
    snap = parse_engine_state({"num_blocks_total": 10, "num_blocks_free": 10, "max_num_seqs": 2,
                               "max_waiting": 8, "healthy": True}, NOW)
    assert snap is not None and (snap.max_num_seqs, snap.max_waiting) == (2, 8)


CHEAPEST = "version: 1\n" + local_and_openai(
    "max_waiting: 8", openai='base_url: "http://127.0.0.1:9/v1", expected_ttft_s: 0.6') + """\
slos:
  fast: {ttft_p95_s: 1.0}
rules:
  - {name: cheap, strategy: cheapest_within_slo, candidates: [local, openai], slo: fast}
"""


def test_cheapest_within_slo_prices_ours_sent_since_the_poll_at_their_size() -> None:
    # 1000 prompt tokens/s; a 100-token request behind two of ours sent since an idle poll, 64 slots free.
    snap = engine(prefill_tps=1000.0, max_num_seqs=64)

    def first(tokens_since: int) -> tuple[str, str]:
        state = live({"local": snap}, in_flight={"local": InFlight(2, 2, 0, tokens_since)})
        decision = decide(compiled(CHEAPEST), facts(prompt=100, blocks={"local": 10},
                                                     costs={"local": 0.001, "openai": 0.01}), state)
        return decision.targets[0].backend, decision.reason

    backend, reason = first(200)  # (200 + 100) / 1000 = 0.3 s
    assert backend == "local" and "local: ttft 0.3s" in reason
    backend, reason = first(1200)  # two long prompts ahead: (1200 + 100) / 1000 = 1.3 s > 1 s
    assert backend == "openai" and "local: ttft 1.3s" in reason
