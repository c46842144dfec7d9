"""`policy check` warnings: valid policies that are likely wrong — rules naming undefined teams,
rules routing a team outside its allowed_backends, hosted models that nobody prices."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from policies.checks import dotted, policy_warnings
from policies.schema import Policy

POLICY = {
    "backends": {"local": {"kind": "engine", "model": "tiny-random"},
                 "hosted": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                 "priced": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                            "price": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}}},
    "models": {"chat": {"deployments": [{"backend": "local", "model": "tiny-random"},
                                        {"backend": "hosted", "model": "my-private-model"},
                                        {"backend": "hosted", "model": "gpt-4o-mini"},
                                        {"backend": "priced", "model": "my-private-model"}]}},
    "teams": {"ops": {}, "privacy": {"allowed_backends": ["local"]}},
    "rules": [{"name": "typo", "when": {"team": "opps"}, "route": ["local"]},
              {"name": "leak", "when": {"team": ["privacy", "ops"]}, "route": ["hosted", "local"]},
              {"name": "fine", "when": {"any": [{"team": "ops"}]}, "route": ["local"]}],
}
TABLE = {"gpt-4o-mini": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}}


def test_each_kind_of_warning_names_its_field() -> None:
    found = {dotted(loc): message for loc, message in policy_warnings(Policy.model_validate(POLICY), TABLE)}
    assert set(found) == {"rules[0].when.team", "rules[1]", "models.chat.deployments[1]"}
    assert "'opps'" in found["rules[0].when.team"]
    assert "'privacy'" in found["rules[1]"] and "['hosted']" in found["rules[1]"]
    assert "'my-private-model'" in found["models.chat.deployments[1]"] and "budget" in found["models.chat.deployments[1]"]


def test_a_clean_policy_has_no_warnings() -> None:
    clean = {**POLICY, "rules": [POLICY["rules"][2]],  # type: ignore[index]
             "models": {"chat": {"deployments": [{"backend": "local", "model": "tiny-random"}]}}}
    assert policy_warnings(Policy.model_validate(clean), TABLE) == []


def test_policy_check_prints_warnings_and_still_passes(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("backends:\n  up: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}\n"
                    "models:\n  m: {deployments: [{backend: up, model: nobody-prices-me}]}\n"
                    "rules:\n  - {name: r, when: {team: ghost}, route: [up]}\n")
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", str(path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert f"{path}: warning: rules[0].when.team: names team 'ghost'" in run.stderr
    assert f"{path}: warning: models.m.deployments[0]: hosted model 'nobody-prices-me'" in run.stderr


def test_slo_cost_without_any_slo_is_warned_about() -> None:
    rule = {"name": "sc", "strategy": "slo_cost", "candidates": ["local", "priced"]}
    bare = {**POLICY, "rules": [rule]}
    found = {dotted(loc): message for loc, message in policy_warnings(Policy.model_validate(bare), TABLE)}
    assert found["rules[0].strategy"].startswith("slo_cost without `slo`: teams with no slo of their own")
    with_slo = {**bare, "slos": {"s": {"ttft_p95_s": 1.0}}, "rules": [{**rule, "slo": "s"}]}
    found = {dotted(loc) for loc, _ in policy_warnings(Policy.model_validate(with_slo), TABLE)}
    assert "rules[0].strategy" not in found
