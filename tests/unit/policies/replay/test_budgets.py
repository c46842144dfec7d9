"""Team and key limits in replay, as the gateway's limiter applies them: a budget that runs out at a
known request refuses exactly the rest (or routes them by over_budget rules), rpm refuses beyond it, a
key's own budget binds only that key, and the spend is settled with the actuals when a request ends."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gateway.key_spec import KeySpec
from gateway.key_store import KeyStore
from observability.limits_config import TeamLimits
from policies.compiled import compile_policy
from policies.loader import LoadedPolicy
from policies.replay.keys import StoredKey, read_key_store
from policies.replay.outcome import Outcomes
from policies.replay.render import table
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.summary import summarize
from policies.replay.traffic import TrafficRecord
from tests.unit.policies.replay.support import PERF, policy

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC: every request below falls in one UTC day and minute
# One request a second; 1000 prompt + 500 output tokens at $1 / $2 per Mtok = $0.002 each, and
# max_tokens = the output, so the gateway's estimate at reserve is exactly what it then costs.
TRAFFIC = [TrafficRecord(T0 + i, "t", "chat", 1000, 500, max_tokens=500) for i in range(10)]
HOSTED_RULES = "- {name: hosted, route: [openai]}\n"


def _run(loaded: LoadedPolicy, traffic: list[TrafficRecord] = TRAFFIC,
         keys: dict[str, StoredKey] | None = None) -> Outcomes:
    return replay(loaded, traffic, ReplaySetup(PERF, {}, 0, keys=keys or {}))


def _stored(tmp_path: Path, specs: dict[str, KeySpec]) -> dict[str, StoredKey]:
    """Keys created with the gateway's own key store, read back as replay reads them (key_id by name)."""
    store = KeyStore.in_data_dir(tmp_path)
    ids = {name: store.create("t", name, spec)[1].key_id for name, spec in specs.items()}
    store.close()
    stored = read_key_store(tmp_path)
    return {name: stored[key_id] for name, key_id in ids.items()}


def _keyed(names: str) -> list[TrafficRecord]:
    return [TrafficRecord(T0 + i, "t", "chat", 1000, 500, max_tokens=500, key_id=names[i % len(names)])
            for i in range(10)]


def test_a_team_budget_that_runs_out_at_the_sixth_request_refuses_exactly_the_rest() -> None:
    loaded = policy(HOSTED_RULES, "teams:\n  t: {budget: {usd_per_day: 0.01}}\n")  # 5 × $0.002
    out = _run(loaded)
    assert out.backend == ["openai"] * 5 + [""] * 5
    assert out.refusal == [""] * 5 + ["budget"] * 5
    summary = summarize("budget", compile_policy(loaded.policy, {}), TRAFFIC, out, PERF, None)
    assert summary.refused == {"budget": 5}
    assert summary.hosted_cost_usd == 5 * 0.002
    rows = dict(line.split(None, 1) for line in table([summary]).splitlines() if line.startswith("  refused by"))
    assert "refused by budget" in table([summary]) and len(rows) == 1


def test_on_exceed_route_sends_the_rest_through_the_over_budget_rule() -> None:
    rules = "- {name: cheap, when: {over_budget: true}, route: [local]}\n" + HOSTED_RULES
    loaded = policy(rules, "teams:\n  t: {budget: {usd_per_day: 0.01, on_exceed: route}}\n")
    out = _run(loaded)
    assert out.backend == ["openai"] * 5 + ["local"] * 5
    assert out.rule == ["hosted"] * 5 + ["cheap"] * 5
    assert out.over_budget == [False] * 5 + [True] * 5
    summary = summarize("route", compile_policy(loaded.policy, {}), TRAFFIC, out, PERF, None)
    assert summary.refused == {} and summary.over_budget_routed == 5
    assert "over budget, routed" in table([summary])


def test_requests_per_minute_refuses_beyond_the_limit_in_its_minute() -> None:
    out = _run(policy(HOSTED_RULES, "teams:\n  t: {limits: {requests_per_minute: 3}}\n"))
    assert out.refusal == [""] * 3 + ["rate_limit"] * 7
    later = [TrafficRecord(T0 + 60 * i, "t", "chat", 1000, 500) for i in range(5)]  # one per minute
    assert _run(policy(HOSTED_RULES, "teams:\n  t: {limits: {requests_per_minute: 3}}\n"), later).refusal == [""] * 5


def test_a_keys_own_budget_binds_only_that_key() -> None:
    traffic = [TrafficRecord(T0 + i, "t", "chat", 1000, 500, max_tokens=500, key_id="k1" if i % 2 else "k2")
               for i in range(10)]
    out = _run(policy(HOSTED_RULES, "keys:\n  k1: {budget: {usd_per_day: 0.004}}\n"), traffic)
    assert [out.refusal[i] for i in range(1, 10, 2)] == ["", "", "budget", "budget", "budget"]  # k1: 2 × $0.002
    assert [out.backend[i] for i in range(0, 10, 2)] == ["openai"] * 5  # k2: no budget of its own


def test_the_estimate_is_settled_with_the_actual_spend_when_a_request_ends() -> None:
    # max_tokens 1000 but 100 produced: $0.003 held at reserve, $0.0012 spent. With a $0.005 budget the
    # second request fits only because the first was settled (0.0012 + 0.003); the third does not.
    traffic = [TrafficRecord(T0 + i, "t", "chat", 1000, 100, max_tokens=1000) for i in range(4)]
    out = _run(policy(HOSTED_RULES, "teams:\n  t: {budget: {usd_per_day: 0.005}}\n"), traffic)
    assert out.refusal == ["", "", "budget", "budget"]
    at_once = [TrafficRecord(T0, "t", "chat", 1000, 100, max_tokens=1000) for _ in range(2)]
    assert _run(policy(HOSTED_RULES, "teams:\n  t: {budget: {usd_per_day: 0.005}}\n"), at_once).refusal == ["", "budget"]


def test_without_limits_nothing_is_held() -> None:
    out = _run(policy(HOSTED_RULES))
    assert out.refusal == [""] * 10 and not any(out.over_budget)


def test_a_budget_stored_with_a_key_binds_that_key_as_the_gateway_does(tmp_path: Path) -> None:
    keys = _stored(tmp_path, {"k1": KeySpec(limits=TeamLimits(usd_per_day=0.004)), "k2": KeySpec()})
    ids = {name: name for name in keys}  # the traffic names the keys by the ids they were stored under
    out = _run(policy(HOSTED_RULES), [replace(r, key_id=ids[r.key_id]) for r in _keyed(["k1", "k2"])], keys)
    assert [out.refusal[i] for i in range(0, 10, 2)] == ["", "", "budget", "budget", "budget"]  # k1: 2 × $0.002
    assert [out.backend[i] for i in range(1, 10, 2)] == ["openai"] * 5  # k2: nothing of its own
    assert _run(policy(HOSTED_RULES), _keyed(["k1", "k2"])).refusal == [""] * 10  # without the key store: none


def test_stored_and_policy_key_limits_combine_field_by_field_the_tighter(tmp_path: Path) -> None:
    keys = _stored(tmp_path, {"k1": KeySpec(limits=TeamLimits(requests_per_minute=2, usd_per_day=1.0))})
    both = policy(HOSTED_RULES, "keys:\n  k1: {limits: {requests_per_minute: 6}, budget: {usd_per_day: 0.006}}\n")
    assert _run(both, _keyed(["k1"]), keys).refusal == [""] * 2 + ["rate_limit"] * 8  # the store's 2 rpm
    minutes = [replace(r, time=T0 + 60 * i) for i, r in enumerate(_keyed(["k1"]))]  # one a minute, one UTC day
    assert _run(both, minutes, keys).refusal == [""] * 3 + ["budget"] * 7  # the policy's $0.006 a day


def test_a_stored_keys_on_exceed_route_sends_its_rest_through_the_over_budget_rule(tmp_path: Path) -> None:
    keys = _stored(tmp_path, {"k1": KeySpec(limits=TeamLimits(usd_per_day=0.004), on_exceed="route")})
    rules = "- {name: cheap, when: {over_budget: true}, route: [local]}\n" + HOSTED_RULES
    out = _run(policy(rules), _keyed(["k1"]), keys)
    assert out.backend == ["openai"] * 2 + ["local"] * 8 and out.over_budget == [False] * 2 + [True] * 8
    assert out.refusal == [""] * 10
