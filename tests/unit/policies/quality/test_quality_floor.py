"""`difficulty` as a request fact and the quality_floor strategy, on hand-built facts and live state."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import policies
from policies.calibration import Calibration
from policies.compiled import compile_policy
from policies.decide import decide
from policies.errors import PolicyError
from policies.facts import build_facts
from policies.live import HealthView
from policies.loader import load_policy_file
from policies.tokens import TokenCounter

from ..support import NOW, compiled, engine, facts, live, local_and_openai

POLICY = local_and_openai() + """\
teams:
  onprem: {allowed_backends: [local]}
rules:
  - name: batch
    when: {team: [batch, onprem-batch]}
    strategy: quality_floor
    max_difficulty: 0.5
    hard_to_local: true
    local: [local]
    spill: [openai]
  - name: floor
    strategy: quality_floor
    max_difficulty: 0.5
    local: [local]
    spill: [openai]
"""
BLOCKS = {"local": 20}
ROOMY, FULL = live({"local": engine(free=900)}), live({"local": engine(free=5)})


def _route(difficulty: float | None, state=ROOMY, team: str = "default", policy: str = POLICY) -> tuple[str, ...]:
    decision = decide(compiled(policy), replace(facts(team=team, blocks=BLOCKS), difficulty=difficulty), state)
    return tuple(t.backend for t in decision.targets) or (decision.refusal,)


def test_easy_goes_local_while_it_fits_and_spills_when_full() -> None:
    assert _route(0.2) == ("local", "openai")
    assert _route(0.5) == ("local", "openai")  # the floor itself is still easy
    assert _route(0.2, FULL) == ("openai",)


def test_hard_never_reaches_the_weak_model_unless_the_rule_allows_it() -> None:
    assert _route(0.8) == ("openai",)
    assert _route(0.8, FULL) == ("openai",)
    assert _route(None) == ("openai",)  # not scored counts as hard: quality first
    assert _route(0.8, team="batch") == ("openai", "local")  # hard_to_local: local as a fallback
    hosted_down = live({"local": engine(free=900)}, health={"openai": HealthView("open", retry_at=NOW + 5)})
    assert _route(0.8, hosted_down, team="batch") == ("local",)
    refused = decide(compiled(POLICY), replace(facts(blocks=BLOCKS), difficulty=0.8), hosted_down)
    assert refused.targets == () and refused.refusal == "no_healthy_backend"


def test_hard_request_of_a_team_without_hosted_is_refused_not_served_by_the_weak_model() -> None:
    decision = decide(compiled(POLICY), replace(facts(team="onprem", blocks=BLOCKS), difficulty=0.9), ROOMY)
    assert decision.targets == () and decision.refusal == "not_allowed"
    assert "difficulty 0.90 > 0.5" in decision.reason and "hard_to_local" in decision.reason
    assert _route(0.1, team="onprem") == ("local",)


def test_difficulty_in_when_conditions_and_the_reason_shows_it() -> None:
    policy = POLICY.replace("rules:\n", "rules:\n  - name: very-hard\n    when: {difficulty: {gte: 0.9}}\n"
                                        "    route: [openai]\n")
    decision = decide(compiled(policy), replace(facts(blocks=BLOCKS), difficulty=0.95), ROOMY)
    assert decision.rule == "very-hard" and "difficulty >= 0.9 (0.95)" in decision.reason
    assert decide(compiled(policy), replace(facts(blocks=BLOCKS), difficulty=0.6), ROOMY).rule == "floor"
    assert decide(compiled(policy), facts(blocks=BLOCKS), ROOMY).rule == "floor"  # unscored never matches


def test_policy_pays_for_the_score_only_when_a_rule_uses_it() -> None:
    calls: list[object] = []

    def scorer(body: object) -> float:
        calls.append(body)
        return 0.25

    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    plain = POLICY.split("rules:")[0]
    nested = plain + "rules:\n  - name: r\n    when: {any: [{team: x}, {difficulty: {lt: 0.1}}]}\n    route: [local]\n"
    assert not compiled(plain).uses_difficulty
    assert compiled(POLICY).uses_difficulty and compiled(nested).uses_difficulty
    counter, calibration = TokenCounter(), Calibration()
    unused = build_facts(compiled(plain), body, "default", ROOMY, counter=counter, calibration=calibration,
                         difficulty=scorer)
    assert unused.difficulty is None and calls == []
    used = build_facts(compiled(POLICY), body, "default", ROOMY, counter=counter, calibration=calibration,
                       difficulty=scorer)
    assert used.difficulty == 0.25 and calls == [body]


@pytest.mark.parametrize("rule, message", [
    ("{name: q, strategy: quality_floor, local: [local]}", "needs 'max_difficulty'"),
    ("{name: q, strategy: kv_fit, local: [local], max_difficulty: 0.3}", "belongs to strategy quality_floor"),
    ("{name: q, strategy: quality_floor, local: [local], max_difficulty: 1.5}", "less than or equal to 1"),
])
def test_bad_quality_floor_rules_are_refused_at_load(rule: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        compiled(POLICY.split("rules:")[0] + "rules:\n  - " + rule + "\n")


def test_example_policy_decides_as_its_comment_says() -> None:
    path = Path(policies.__file__).parent / "examples" / "quality_floor.yaml"

    def route(difficulty: float, state=ROOMY, team: str = "default", env=None) -> tuple[str, ...]:
        loaded = load_policy_file(path, {"OPENAI_API_KEY": "sk-test"} if env is None else env)
        decision = decide(compile_policy(loaded.policy, {}), replace(facts(team=team, blocks=BLOCKS),
                                                                    difficulty=difficulty), state)
        return tuple(t.backend for t in decision.targets) or (decision.refusal,)

    assert route(0.1) == ("local", "openai") and route(0.1, FULL) == ("openai",)
    assert route(0.3) == ("openai",) and route(0.3, team="batch") == ("openai", "local")
    assert route(0.18, team="research") == ("openai",) and route(0.18) == ("local", "openai")
    assert route(0.5, team="batch") == ("openai",)  # very hard: the first rule, before batch's fallback
    assert route(0.3, env={}) == ("not_allowed",) and route(0.3, team="batch", env={}) == ("local",)
