"""Policy files: every mistake is reported as file:line, the field, and what is allowed."""
from __future__ import annotations

import textwrap

import pytest

from policies.errors import PolicyError
from policies.loader import load_default_policy, load_policy, load_policy_file

BASE = """\
version: 1
backends:
  local:
    kind: engine
    model: smollm2
  openai:
    kind: openai
    base_url: https://api.openai.com/v1
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: openai, model: gpt-4o-mini}
"""


def _error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(textwrap.dedent(text), "p.yaml", env or {})
    return info.value.message


def test_misspelled_field_points_at_its_line_and_suggests_the_name() -> None:
    message = _error(BASE + "rules:\n  - name: long\n    when:\n      prompt_tokns: {gt: 100}\n    route: [openai]\n")
    assert message.startswith("p.yaml:17: rules[0].when.prompt_tokns: unknown field; did you mean 'prompt_tokens'?")
    assert "allowed: team, model, prompt_tokens" in message


def test_misspelled_backend_field() -> None:
    message = _error(BASE.replace("    model: smollm2\n", "    modle: smollm2\n", 1))
    assert message.startswith("p.yaml:5: backends.local.modle: unknown field; did you mean 'model'?")


def test_every_problem_is_listed() -> None:
    text = BASE.replace("kind: engine", "kind: engin") + "rules:\n  - name: r\n    route: [openai]\n    bogus: 1\n"
    message = _error(text)
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("p.yaml:4: backends.local.kind: Input should be 'openai', 'litellm' or 'engine'")
    assert lines[1].startswith("p.yaml:17: rules[0].bogus: unknown field")


def test_unknown_backend_reference_names_the_defined_ones() -> None:
    message = _error(BASE + "rules:\n  - name: r\n    route: [opnai]\n")
    assert message == "p.yaml:16: rules[0].route[0]: unknown backend 'opnai'; defined: local, openai"


def test_field_of_another_strategy_points_at_that_field() -> None:
    text = BASE + "rules:\n  - name: r\n    strategy: kv_fit\n    local: [local]\n    route: [openai]\n"
    assert _error(text) == "p.yaml:18: rules[0].route: field 'route' belongs to strategy first_match, not kv_fit"


def test_kv_fit_needs_engines_with_state() -> None:
    text = BASE + "rules:\n  - name: r\n    strategy: kv_fit\n    local: [openai]\n"
    assert "p.yaml:17: rules[0].local[0]: backend 'openai' reports no engine state" in _error(text)


def test_missing_required_field_and_empty_file() -> None:
    assert _error("version: 1\nbackends: {}\n") == "p.yaml:1: models: required field is missing"
    assert _error("") == "p.yaml:1: the file is empty; a policy needs at least backends and models"


def test_duplicate_keys_and_bad_yaml() -> None:
    assert _error(BASE + "models: {}\n") == "p.yaml:14: duplicate key 'models' (first at line 9)"
    assert _error(BASE + "rules: [\n").startswith("p.yaml:")


def test_undefined_slo_model_and_duplicate_rule_names() -> None:
    text = BASE + textwrap.dedent("""\
        rules:
          - name: a
            strategy: cheapest_within_slo
            candidates: [local, openai]
            slo: fast
          - name: a
            when: {model: [chat, gpt4]}
            route: [local]
        """)
    lines = _error(text).splitlines()
    assert lines == [
        "p.yaml:18: rules[0].slo: unknown slo 'fast'; defined: none defined",
        "p.yaml:19: rules[1].name: duplicate rule name 'a' (also rules[0])",
        "p.yaml:20: rules[1].when.model: unknown model alias 'gpt4'; defined: chat",
    ]


def test_time_window_values_are_checked() -> None:
    text = BASE + "rules:\n  - name: r\n    when: {time: {between: ['9:00', '17:00'], tz: Mars/Base}}\n    route: [local]\n"
    lines = _error(text).splitlines()
    assert lines[0] == "p.yaml:16: rules[0].when.time.between: '9:00' is not a time of day; write HH:MM, e.g. \"09:30\""
    assert lines[1].startswith("p.yaml:16: rules[0].when.time.tz: unknown time zone 'Mars/Base'")


def test_rules_see_only_x_headers() -> None:
    message = _error(BASE + "rules:\n  - name: r\n    when: {headers: {authorization: x}}\n    route: [local]\n")
    assert message == "p.yaml:16: rules[0].when.headers: header 'authorization': rules see only x-* headers (e.g. x-priority)"


def test_key_hash_format() -> None:
    message = _error(BASE + "teams:\n  a:\n    key_hashes: [abc]\n")
    assert message == "p.yaml:16: teams.a.key_hashes: 'abc'… is not a key hash; write sha256:<64 lower-case hex digits>"


def test_env_expansion_with_defaults() -> None:
    text = BASE.replace("https://api.openai.com/v1", "${UPSTREAM:-http://fallback/v1}")
    assert load_policy(text, "p.yaml", {}).policy.backends["openai"].base_url == "http://fallback/v1"
    got = load_policy(text, "p.yaml", {"UPSTREAM": "http://set/v1"}).policy.backends["openai"].base_url
    assert got == "http://set/v1"


def test_requires_env_removes_backend_and_what_pointed_at_it() -> None:
    text = BASE.replace("    base_url: https://api.openai.com/v1\n",
                        "    base_url: https://api.openai.com/v1\n    requires_env: OPENAI_API_KEY\n")
    text += "  hosted-only:\n    deployments: [{backend: openai, model: gpt-4o}]\n"
    text += "rules:\n  - name: big\n    route: [openai]\n  - name: fit\n    strategy: kv_fit\n    local: [local]\n    spill: [openai]\n"
    absent = load_policy(text, "p.yaml", {})
    assert absent.absent_backends == ("openai",)
    assert list(absent.policy.backends) == ["local"]
    assert list(absent.policy.models) == ["chat"]
    assert [d.backend for d in absent.policy.models["chat"].deployments] == ["local"]
    assert [(r.name, r.spill) for r in absent.policy.rules] == [("fit", [])]
    present = load_policy(text, "p.yaml", {"OPENAI_API_KEY": "sk-test"})
    assert present.absent_backends == () and len(present.policy.rules) == 2


def test_default_policy_with_and_without_a_hosted_key() -> None:
    alone = load_default_policy({})
    assert alone.absent_backends == ("openai",) and list(alone.policy.models) == ["smollm2"]
    hybrid = load_default_policy({"OPENAI_API_KEY": "sk-test"})
    assert [d.backend for d in hybrid.policy.models["smollm2"].deployments] == ["local", "openai"]
    assert hybrid.policy.rules[0].strategy == "slo_cost"


def test_unreadable_file(tmp_path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy_file(tmp_path / "missing.yaml", {})
