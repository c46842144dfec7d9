"""Every example policy (and the embedded default) passes `hybridgw policy check`, with and
without the hosted keys set, and makes the decision its comment promises."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import policies
from policies.compiled import compile_policy
from policies.decide import decide
from policies.loader import load_policy_file

from .support import TUESDAY_NOON_UTC, engine, facts, live

EXAMPLES = sorted((Path(policies.__file__).parent / "examples").glob("*.yaml"))
DEFAULT = Path(policies.__file__).parent / "defaults" / "default.yaml"
KEYS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-test"}
INTENTS = {"spill_to_hosted", "long_prompts_to_hosted", "privacy_team_local_only", "cheapest_within_slo",
           "seasonal_time_windows", "over_budget_to_local"}


def test_one_example_per_intent() -> None:
    assert INTENTS <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("env", [{}, KEYS], ids=["no-keys", "keys"])
def test_examples_load(env: dict[str, str]) -> None:
    for path in [*EXAMPLES, DEFAULT]:
        loaded = load_policy_file(path, env)
        assert loaded.policy.models, path


def test_policy_check_cli_accepts_all_examples() -> None:
    files = [str(p) for p in [*EXAMPLES, DEFAULT]]
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "policy", "check", *files],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count(": ok — ") == len(files)


def _decide(name: str, env=KEYS, **kw):
    loaded = load_policy_file(Path(policies.__file__).parent / "examples" / f"{name}.yaml", env)
    return decide(compile_policy(loaded.policy, {}), facts(**{k: v for k, v in kw.items() if k != "state"}), kw["state"])


def test_examples_decide_as_their_comments_say() -> None:
    full, roomy = live({"local": engine(free=5)}), live({"local": engine(free=900)})
    blocks = {"local": 20}
    assert [t.backend for t in _decide("spill_to_hosted", state=full, blocks=blocks).targets] == ["openai"]
    assert _decide("spill_to_hosted", env={}, state=full, blocks=blocks).refusal == "no_capacity"
    assert [t.backend for t in _decide("long_prompts_to_hosted", state=roomy, prompt=5000, blocks=blocks).targets][0] == "openai"
    legal = _decide("privacy_team_local_only", state=full, team="legal", blocks=blocks)
    assert legal.targets == () and legal.refusal == "no_capacity"
    assert [t.backend for t in _decide("over_budget_to_local", state=roomy, team="marketing", over_budget=True,
                                       blocks=blocks).targets] == ["local"]
    night = TUESDAY_NOON_UTC + 10 * 3600  # 23:00 in Berlin
    seasonal = _decide("seasonal_time_windows", state=live({"local": engine(), "night-pool": engine()}),
                       model="batch", now=night, blocks={"local": 20, "night-pool": 20})
    assert seasonal.rule == "nights"
