"""Shadow traffic's policy part (#16 item 5): `teams.T.shadow` validated with clear errors (a backend the
team's allowed_backends forbid, an unknown one, a bad share), and the pure sampling / partner choice."""
from __future__ import annotations

import pytest

from policies.errors import PolicyError
from policies.loader import load_policy
from policies.shadow_spec import ShadowSpec, forbidden_backends, partner, sampled

BASE = """
backends:
  weak: {kind: openai, base_url: "http://127.0.0.1:1/v1"}
  strong: {kind: openai, base_url: "http://127.0.0.1:2/v1"}
models:
  m: {deployments: [{backend: weak, model: m}]}
teams:
  red:
"""


def load(team: str) -> object:
    return load_policy(BASE + "    " + team + "\n", "p.yaml")


def test_a_valid_shadow_loads_and_defaults() -> None:
    policy = load("shadow: {share: 0.05, backends: [weak, strong]}").policy  # type: ignore[attr-defined]
    spec = policy.teams["red"].shadow
    assert (spec.share, spec.backends, spec.seed, spec.max_pairs) == (0.05, ["weak", "strong"], 0, 10_000)
    assert policy.shadow_limits.max_in_flight == 4 and policy.shadow_limits.max_queue == 64
    assert load("{}").policy.teams["red"].shadow is None  # type: ignore[attr-defined]


def test_a_backend_the_team_may_not_use_is_a_load_error_naming_it() -> None:
    with pytest.raises(PolicyError) as err:
        load("{allowed_backends: [weak], shadow: {share: 0.5, backends: [weak, strong]}}")
    assert "p.yaml:" in str(err.value)
    assert "shadow.backends names 'strong', which the team's allowed_backends (weak) forbid" in str(err.value)
    # allowed: listed in allowed_backends, or no allowed_backends at all
    load("{allowed_backends: [weak, strong], shadow: {share: 0.5, backends: [weak, strong]}}")


@pytest.mark.parametrize(("shadow", "message"), [
    ("{share: 0.5, backends: [weak, nope]}", "unknown backend 'nope'"),
    ("{share: 1.5, backends: [weak, strong]}", "less than or equal to 1"),
    ("{share: -0.1, backends: [weak, strong]}", "greater than or equal to 0"),
    ("{share: 0.5, backends: [weak]}", "at least 2 items"),
    ("{share: 0.5, backends: [weak, weak]}", "must differ"),
    ("{share: 0.5, backends: [weak, strong], max_pairs: 0}", "greater than or equal to 1"),
    ("{share: 0.5, backends: [weak, strong], sample: 3}", "sample"),
])
def test_bad_shadows_are_refused_with_the_reason(shadow: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        load(f"{{shadow: {shadow}}}")
    assert message in str(err.value) and "shadow" in str(err.value)


def test_sampling_is_deterministic_and_takes_about_the_share() -> None:
    ids = [f"req_{i:024x}" for i in range(20_000)]
    picked = [i for i in ids if sampled(i, 7, 0.05)]
    assert picked == [i for i in ids if sampled(i, 7, 0.05)]  # reproducible
    assert 800 <= len(picked) <= 1200  # 5% of 20,000 = 1,000 (±6 sd)
    other_seed = {i for i in ids if sampled(i, 8, 0.05)}
    assert other_seed != set(picked) and 800 <= len(other_seed) <= 1200
    assert set(picked) <= {i for i in ids if sampled(i, 7, 0.2)}  # a larger share keeps the smaller's picks
    assert not any(sampled(i, 7, 0.0) for i in ids[:1000]) and all(sampled(i, 7, 1.0) for i in ids[:1000])


def test_partner_and_guard() -> None:
    spec = ShadowSpec(share=1.0, backends=["weak", "strong"])
    assert (partner(spec, "weak"), partner(spec, "strong"), partner(spec, "other")) == ("strong", "weak", None)
    assert forbidden_backends(spec, None) == [] and forbidden_backends(spec, ["weak"]) == ["strong"]
