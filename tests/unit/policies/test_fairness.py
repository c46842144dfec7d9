"""Team fairness on a contended engine, with a deterministic clock: weighted shares under a flood,
batch yielding before interactive, the uncontended case unchanged, and a header that can lower a
request's class but never raise it. Driven through the real PolicyRouter and decide(), no sockets."""
from __future__ import annotations

import textwrap
from dataclasses import replace
from types import MappingProxyType

import pytest

from policies.errors import PolicyError
from policies.fairness import BATCH, INTERACTIVE, DemandBook, EngineTeams, contended, judge, request_class
from policies.holds import Hold, HoldBook
from policies.loader import load_policy
from policies.router import PolicyRouter
from tests.support.clock import ManualClock

from .support import NOW, engine, local_and_openai

# 100 KV blocks; each request below needs 10 (13 prompt + 147 output tokens): 10 fit at once. The
# engine counts as contended once a request would leave fewer than 30 blocks (from the 8th on).
POLICY = local_and_openai('base_url: "http://127.0.0.1:9/v1", max_waiting: 64',
                          openai='base_url: "http://127.0.0.1:9/v1"') + """\
teams:
  red: {share: RED}
  blue: {share: BLUE}
  nightly: {class: batch}
fairness: {kv_free_fraction: 0.3, enabled: ENABLED}
rules:
  - {name: fit, strategy: kv_fit, local: [local], spill: [openai]}
"""
BODY = {"model": "chat", "max_tokens": 147, "messages": [{"role": "user", "content": "tiktoken is great!"}]}


def _router(red: float = 1, blue: float = 1, enabled: bool = True, rule: str = "") -> tuple[PolicyRouter, ManualClock]:
    text = POLICY.replace("RED", str(red)).replace("BLUE", str(blue)).replace("ENABLED", str(enabled).lower())
    if rule:
        text = text.replace("  - {name: fit, strategy: kv_fit, local: [local], spill: [openai]}", rule)
    clock = ManualClock(NOW)
    router = PolicyRouter(load_policy(textwrap.dedent(text), "p.yaml", {}), price_table={}, clock=clock,
                          wall_clock=lambda: 0.0)
    _poll(router, clock)
    return router, clock


def _poll(router: PolicyRouter, clock: ManualClock) -> None:
    """A fresh, idle-looking engine state: what is in use is what this gateway holds."""
    router.poller.snapshots = MappingProxyType({"local": replace(engine(free=100, total=100), taken_at=clock.now,
                                                                 max_num_seqs=64)})


def _send(router: PolicyRouter, team: str, headers: dict[str, str] | None = None) -> tuple[str, Hold | None, str]:
    """Route one request and, where it went local, hold it as the gateway would: (backend, hold, reason)."""
    facts = router.decider.build_facts(BODY, team, headers=headers)
    decision = router.decider.route(facts)
    backend = decision.targets[0].backend if decision.targets else ""
    return backend, router.live.reserve(backend, facts) if backend == "local" else None, decision.reason


def _flood(red: float, blue: float) -> dict[str, float]:
    """Red floods (6 requests a tick), blue asks for 3 a tick, every request lasts 3 ticks; red's
    arrive first each tick. The mean share of the engine's in-flight requests per team, after warm-up."""
    router, clock = _router(red, blue)
    ends: list[tuple[int, Hold]] = []
    totals = {"red": 0, "blue": 0}
    for tick in range(60):
        clock.now = NOW + tick * 0.1
        for end, hold in [e for e in ends if e[0] <= tick]:
            router.live.release(hold)
            ends.remove((end, hold))
        _poll(router, clock)
        for team in ["red"] * 6 + ["blue"] * 3:
            _, hold, _ = _send(router, team)
            if hold is not None:
                ends.append((tick + 3, hold))
        if tick >= 20:
            for team in totals:
                totals[team] += router.live.holds.by_team().get("local", {}).get(team, 0)
    held = sum(totals.values())
    return {team: n / held for team, n in totals.items()}


@pytest.mark.parametrize(("red", "blue"), [(1, 1), (1, 3), (3, 1)])
def test_shares_converge_to_the_weights_under_a_flood(red: float, blue: float) -> None:
    shares = _flood(red, blue)
    assert shares["blue"] == pytest.approx(blue / (red + blue), abs=0.1), shares


def test_without_fairness_the_flooding_team_takes_the_engine() -> None:
    router, _ = _router(enabled=False)
    for _ in range(10):
        _send(router, "red")
    assert router.live.holds.by_team()["local"] == {"red": 10}
    backend, _, _ = _send(router, "blue")
    assert backend == "openai"  # nothing left for blue


def test_a_quiet_team_keeps_room_on_the_engine_against_a_flood() -> None:
    router, _ = _router()
    assert _send(router, "blue")[0] == "local"  # blue asked: it wants the engine for the demand window
    sent = [_send(router, "red") for _ in range(12)]
    red_holds = [hold for _, hold, _ in sent if hold is not None]
    # Red takes all but the slot blue may claim (the most it held lately, 1, plus one to grow by).
    assert [b for b, _, _ in sent] == ["local"] * 8 + ["openai"] * 4
    reason = sent[-1][2]
    assert "local: yields, red holds 8 of 10 slots, share 5 (weight 1 of 2): at or over its share, " \
           "and room for 1 while blue holds 1, lacks 1" in reason, reason
    assert [_send(router, "blue")[0] for _ in range(2)] == ["local", "openai"]  # the room was kept; now full
    # As red's requests end, blue's claim grows one slot per round while it keeps asking, up to its share.
    for round_ in range(3):
        for hold in red_holds[:2]:
            router.live.release(hold)
        del red_holds[:2]
        red = [_send(router, "red") for _ in range(3)]
        red_holds += [hold for _, hold, _ in red if hold is not None]
        assert [b for b, _, _ in red] == ["local", "openai", "openai"], (round_, red)
        assert _send(router, "blue")[0] == "local"
    assert dict(router.live.holds.by_team()["local"]) == {"red": 5, "blue": 5}  # the weights: 1 to 1


def test_uncontended_every_team_goes_local() -> None:
    router, _ = _router()
    for i in range(7):  # 7 × 10 blocks leave 30: never contended
        backend, _, reason = _send(router, "red" if i % 3 else "blue")
        assert backend == "local" and "yields" not in reason, reason
    assert _send(router, "nightly")[0] == "openai"  # the 8th would leave 20 < 30: batch yields first


def test_batch_yields_before_interactive() -> None:
    router, _ = _router()
    for _ in range(7):
        _send(router, "red")  # interactive, 70 blocks: the next one makes the engine contended
    backend, _, reason = _send(router, "nightly")
    assert backend == "openai" and "batch yields to interactive demand (red)" in reason, reason
    backend, _, reason = _send(router, "blue", headers={"x-hybridgw-priority-class": "batch"})
    assert backend == "openai" and "batch yields" in reason, reason
    # The same contended engine still takes interactive requests within their share.
    assert _send(router, "blue")[0] == "local"


def test_a_header_can_lower_the_class_never_raise_it() -> None:
    assert request_class(INTERACTIVE, "batch") == BATCH
    assert request_class(INTERACTIVE, " Batch ") == BATCH
    assert request_class(BATCH, "interactive") == BATCH
    assert request_class(BATCH, None) == BATCH
    assert request_class(INTERACTIVE, "urgent") == INTERACTIVE
    router, _ = _router()
    for _ in range(7):
        _send(router, "red")
    backend, _, reason = _send(router, "nightly", headers={"x-hybridgw-priority-class": "interactive"})
    assert backend == "openai" and "batch yields" in reason, reason


def test_contention_and_judgement_numbers() -> None:
    assert contended(0, 4, 50, 100, 0.5, 0.1) is None
    assert contended(2, 4, 50, 100, 0.5, 0.1) == "queue 2 ≥ 2"
    assert contended(1, 0, 50, 100, 0.5, 0.1) == "queue 1 ≥ 1"  # no queue allowed: one waiting is near it
    assert contended(0, 4, 9, 100, 0.5, 0.1) == "9/100 KV blocks left < 10%"
    weights = {"a": 1.0, "b": 3.0}.__getitem__
    load = EngineTeams(held={"a": 2, "b": 2}, wanting={"a": BATCH, "b": INTERACTIVE}, claims={"b": 5})
    # 7 slots (4 held + room for 3): a's share 1.75, b's 5.25; b lacks 3 (up to its claim of 5).
    assert judge("a", INTERACTIVE, weights, load, 3, None).yields
    assert not judge("a", INTERACTIVE, weights, load, 4, None).yields  # room for b's 3 and this one
    assert not judge("a", INTERACTIVE, weights, load, 6, None).yields  # 10 slots: a's share is 2.5
    assert not judge("b", INTERACTIVE, weights, load, 1, "queue 2 ≥ 2").yields  # b is under its share
    assert judge("a", BATCH, weights, load, 9, "queue 2 ≥ 2").yields  # near the limit: batch yields
    assert not judge("a", BATCH, weights, load, 9, None).yields  # uncontended: unchanged
    nobody_else = EngineTeams(held={"a": 9}, wanting={"a": INTERACTIVE})
    assert not judge("a", INTERACTIVE, weights, nobody_else, 1, "queue 2 ≥ 2").yields  # nobody else wants it
    only_batch = EngineTeams(held={"a": 9, "b": 1}, wanting={"a": BATCH, "b": BATCH})
    assert not judge("a", BATCH, weights, only_batch, 1, "queue 2 ≥ 2").yields  # no interactive demand


def test_demand_and_claims_expire_after_their_window() -> None:
    book = DemandBook()
    book.note(["local"], "blue", INTERACTIVE, NOW)
    book.note(["local"], "blue", BATCH, NOW + 1)
    book.note(["local", "other"], "red", BATCH, NOW + 5)
    view = book.view({"local": {"blue": 3}}, NOW + 5, 10.0)["local"]
    assert dict(view.wanting) == {"blue": INTERACTIVE, "red": BATCH}
    assert dict(view.claims) == {"blue": 4, "red": 1}  # the most held lately, plus one
    view = book.view({"local": {"blue": 1}}, NOW + 10.5, 10.0)["local"]
    assert dict(view.wanting) == {"blue": BATCH, "red": BATCH} and view.claims["blue"] == 4
    assert book.view({"local": {"blue": 1}}, NOW + 14, 10.0)["local"].claims == {"red": 1}  # blue asked too long ago
    assert book.view({}, NOW + 20, 10.0) == {}


@pytest.mark.parametrize("rule", ["  - {name: fit, strategy: kv_fit, local: [local]}",
                                  "  - {name: fit, strategy: slo_cost, candidates: [local]}"])
def test_with_nowhere_to_spill_the_yielding_team_waits(rule: str) -> None:
    router, _ = _router(rule=rule)
    _send(router, "blue")
    assert [_send(router, "red")[0] for _ in range(9)] == ["local"] * 8 + [""]
    decision = router.decider.route(router.decider.build_facts(BODY, "red"))
    assert decision.refusal == "no_capacity" and decision.retry_after_s > 0  # 503 + Retry-After: it waits
    assert "local: yields, red holds 8 of 10 slots" in decision.reason, decision.reason
    assert _send(router, "blue")[0] == "local"


def test_slo_cost_sends_a_yielding_team_to_the_other_candidate() -> None:
    router, _ = _router(rule="  - {name: fit, strategy: slo_cost, candidates: [local, openai]}")
    _send(router, "blue")
    assert [_send(router, "red")[0] for _ in range(9)] == ["local"] * 8 + ["openai"]
    assert _send(router, "blue")[0] == "local"


def test_the_cached_view_follows_new_demand_holds_and_expiry() -> None:
    book, holds = DemandBook(), HoldBook()
    book.note(["local"], "red", INTERACTIVE, NOW)
    assert dict(book.view(holds.by_team(), NOW, 10.0)["local"].wanting) == {"red": INTERACTIVE}
    book.note(["local"], "blue", BATCH, NOW + 1)  # a new team: the next view has it
    assert dict(book.view(holds.by_team(), NOW + 1, 10.0)["local"].wanting) == {"red": INTERACTIVE, "blue": BATCH}
    hold = holds.add("local", 10, NOW + 2, "blue")  # the holds change: blue's claim grows
    assert book.view(holds.by_team(), NOW + 2, 10.0)["local"].claims == {"red": 1, "blue": 2}
    holds.release(hold, NOW + 3)
    assert holds.by_team() == {}
    book.note(["local"], "red", INTERACTIVE, NOW + 9)  # red asks again; blue's ask (NOW + 1) expires
    assert dict(book.view(holds.by_team(), NOW + 11.5, 10.0)["local"].wanting) == {"red": INTERACTIVE}


def test_the_policy_refuses_a_bad_share_or_class() -> None:
    text = POLICY.replace("RED", "0").replace("BLUE", "1").replace("ENABLED", "true") \
        .replace("nightly: {class: batch}", "nightly: {class: urgent}")
    with pytest.raises(PolicyError) as caught:
        load_policy(textwrap.dedent(text), "p.yaml", {})
    assert "teams.red.share: Input should be greater than 0" in caught.value.message
    assert "teams.nightly.class: Input should be 'interactive' or 'batch'" in caught.value.message
