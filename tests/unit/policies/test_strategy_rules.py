"""Each strategy's rule fields are its own model in a union on `strategy`: the loader's file:line
messages and did-you-mean follow the union, and nothing outside the registry lists their fields."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from policies.strategies import STRATEGY_TYPES
from tests.unit.policies.test_loader import BASE, _error

SLOS = "slos:\n  chat: {ttft_p95_s: 1.0}\n"


@pytest.mark.parametrize("rule, message", [
    ("    strategy: kv_fit\n    local: [local]\n    spil: [openai]\n",
     "p.yaml:18: rules[0].spil: unknown field; did you mean 'spill'?"),
    ("    strategy: slo_cost\n    candidates: [local, openai]\n    margn: 0.1\n",
     "p.yaml:18: rules[0].margn: unknown field; did you mean 'margin'?"),
    ("    strategy: slo_cost\n    candidates: [local]\n    max_difficulty: 0.2\n",
     "p.yaml:18: rules[0].max_difficulty: field 'max_difficulty' belongs to strategy quality_floor, not slo_cost"),
    ("    strategy: slo_cost\n", "p.yaml:15: rules[0].candidates: required field is missing: strategy slo_cost needs"),
    ("    strategy: kvfit\n    local: [local]\n", "p.yaml:16: rules[0]: 'strategy' must be one of first_match, kv_fit"),
    ("    strategy: slo_cost\n    candidates: [local]\n    slo: fast\n", "p.yaml:18: rules[0].slo: unknown slo 'fast'"),
    ("    strategy: slo_cost\n    candidates: [local]\n    hysteresis: 1.5\n", "p.yaml:18: rules[0].hysteresis: Input"),
    ("    strategy: slo_cost\n    candidates: [local]\n    when: {tem: a}\n",
     "p.yaml:18: rules[0].when.tem: unknown field; did you mean 'team'?"),
])
def test_strategy_fields_are_reported_at_their_line(rule: str, message: str) -> None:
    assert _error(BASE + "rules:\n  - name: r\n" + rule).startswith(message)


def test_a_rule_without_strategy_is_first_match() -> None:
    lines = _error(BASE + "rules:\n  - name: r\n    local: [local]\n").splitlines()
    assert lines == ["p.yaml:15: rules[0].route: required field is missing: strategy first_match needs 'route'",
                     "p.yaml:16: rules[0].local: field 'local' belongs to strategy kv_fit, not first_match"]


def test_no_strategy_field_names_outside_the_strategies() -> None:
    root = Path(__file__).resolve().parents[3] / "policies"
    fields = {f for kind in STRATEGY_TYPES.values() for f in kind.rule.model_fields} - {
        "name", "description", "when", "shadow", "strategy", "slo"}
    for name in ("loader.py", "checks.py", "compiled.py", "cli.py", "decide.py"):
        text = (root / name).read_text()
        used = [f for f in fields if re.search(rf"[\"'.]{f}\b", text)]
        assert used == [], f"{name} names strategy fields {used}"
