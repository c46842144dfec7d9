"""A policy names a performance model file per backend (`hybridgw bench --profile` writes them): read
at load and reload relative to the policy file, errors at the policy's line, and slo_cost (and the
replay) predict with the file's numbers."""
from __future__ import annotations

from pathlib import Path

import pytest

from policies.compiled import compile_policy
from policies.decide import decide
from policies.errors import PolicyError
from policies.loader import LoadedPolicy, load_policy_file
from policies.perf_model import EngineModel, PerfModel
from policies.perf_model_file import read_perf_model_file, with_overrides
from policies.reload import PolicyReloader

from .support import engine, facts, live

POLICY = """\
backends:
  local:
    kind: engine
    model: smollm2
    perf_model: models/local.yaml
  openai:
    kind: openai
    base_url: "http://up/v1"
    perf_model: {hosted_file}
models:
  chat:
    deployments:
      - {{backend: local, model: smollm2}}
      - {{backend: openai, model: gpt-4o-mini}}
slos:
  interactive: {{ttft_p95_s: 1.0}}
teams:
  anyone: {{}}
rules:
  - {{name: r, strategy: slo_cost, candidates: [local, openai], slo: interactive, margin: 0.1}}
"""
# Known numbers: 100 ms per prefill step + 2 ms per prompt token, a huge budget (one step); hosted p95 0.7 s.
ENGINE = """\
engines:
  default: {prefill_fixed_s: 0.1, prefill_per_token_s: 0.002, max_num_batched_tokens: 100000,
            decode_fixed_s: 0.05, decode_per_seq_s: 0.0, decode_per_context_token_s: 0.0}
"""
HOSTED = "hosted:\n  openai: {ttft_p50_s: 0.3, ttft_p95_s: 0.7}\n"


def _write(tmp_path: Path, engine_text: str = ENGINE, hosted_file: str = "hosted.yaml") -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "local.yaml").write_text(engine_text)
    (tmp_path / "hosted.yaml").write_text(HOSTED)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(hosted_file=hosted_file))
    return path


def _decide(loaded: LoadedPolicy, prompt: int, waiting: int = 0, running: int = 0):
    compiled = compile_policy(loaded.policy, {}, loaded.source, perf_model=loaded.perf_model)
    f = facts(team="anyone", prompt=prompt, blocks={"local": 10}, costs={"local": 0.0001, "openai": 0.01})
    return decide(compiled, f, live({"local": engine(waiting=waiting, running=running)}))


def test_slo_cost_predicts_with_the_named_files_numbers(tmp_path: Path) -> None:
    loaded = load_policy_file(_write(tmp_path), {})
    assert loaded.perf_model is not None and loaded.perf_model.engine("local").prefill_per_token_s == 0.002
    decision = _decide(loaded, prompt=200)  # idle engine: 0.1 + 200 × 0.002 = 0.5 s
    assert "local: ttft p95 0.5s live" in decision.reason
    assert "openai: ttft p95 0.7s prior" in decision.reason  # the hosted file's p95, nothing observed yet
    assert decision.targets[0].backend == "local"
    decision = _decide(loaded, prompt=150, waiting=1)  # one like it ahead: 0.1 + 300 × 0.002 = 0.7 s
    assert "local: ttft p95 0.7s live" in decision.reason and decision.targets[0].backend == "local"
    # a 50 ms decode step in progress, then one mixed step in one pass: 0.05 + 0.1 + 200 × 0.002 = 0.55 s
    decision = _decide(loaded, prompt=200, running=2)
    assert "local: ttft p95 0.55s live" in decision.reason
    decision = _decide(loaded, prompt=300, waiting=1)  # 0.1 + 600 × 0.002 = 1.3 s: misses, hosted first
    assert "local: ttft p95 1.3s live" in decision.reason and decision.targets[0].backend == "openai"


def test_the_default_model_predicts_otherwise(tmp_path: Path) -> None:
    """The test above can fail: without the file, the built-in SmolLM2 model gives other numbers."""
    path = _write(tmp_path)
    path.write_text(path.read_text().replace("    perf_model: models/local.yaml\n", ""))
    loaded = load_policy_file(path, {})
    assert "local: ttft p95 0.5s" not in _decide(loaded, prompt=200).reason


def test_a_missing_file_is_an_error_at_the_policys_line(tmp_path: Path) -> None:
    path = _write(tmp_path, hosted_file="nowhere.yaml")
    with pytest.raises(PolicyError) as err:
        load_policy_file(path, {})
    assert err.value.message.startswith(f"{path}:9: backends.openai.perf_model: ")
    assert "nowhere.yaml: cannot read the performance model" in err.value.message


def test_a_bad_file_names_its_field_and_the_policys_line(tmp_path: Path) -> None:
    path = _write(tmp_path, engine_text="engines:\n  default: {prefill_per_tok: 0.1}\n")
    with pytest.raises(PolicyError) as err:
        load_policy_file(path, {})
    assert err.value.message.startswith(f"{path}:5: backends.local.perf_model: ")
    assert "engines.default: unknown field 'prefill_per_tok'" in err.value.message
    _write(tmp_path, engine_text="engines:\n  default: {prefill_fixed_s: -1}\n")
    with pytest.raises(PolicyError, match="prefill_fixed_s must be a number ≥ 0"):
        load_policy_file(path, {})
    _write(tmp_path, engine_text="[1, 2]\n")
    with pytest.raises(PolicyError, match=r"policy.yaml:5: .*is a mapping"):
        load_policy_file(path, {})


def test_the_entry_is_the_backends_own_else_default_else_the_only_one(tmp_path: Path) -> None:
    two = "engines:\n  local: {prefill_fixed_s: 0.3}\n  other: {prefill_fixed_s: 0.4}\n"
    assert load_policy_file(_write(tmp_path, engine_text=two), {}).perf_model.engine("local").prefill_fixed_s == 0.3
    only = "engines:\n  gpu-box: {prefill_fixed_s: 0.2}\n"
    assert load_policy_file(_write(tmp_path, engine_text=only), {}).perf_model.engine("local").prefill_fixed_s == 0.2
    neither = "engines:\n  a: {prefill_fixed_s: 0.2}\n  b: {prefill_fixed_s: 0.3}\nhosted:\n  local: {}\n"
    with pytest.raises(PolicyError, match=r"no `engines` entry named 'local' or `default` \(it has: a, b\)"):
        load_policy_file(_write(tmp_path, engine_text=neither), {})


def test_a_reload_reads_the_file_again_and_refuses_a_broken_one(tmp_path: Path) -> None:
    path = _write(tmp_path)
    applied: list[LoadedPolicy] = []
    reloader = PolicyReloader(path, applied.append, environ={})
    (tmp_path / "models" / "local.yaml").write_text(ENGINE.replace("0.002", "0.004"))
    assert reloader.check(force=True)  # SIGHUP forces: the policy text is unchanged, its model is not
    assert applied[-1].perf_model.engine("local").prefill_per_token_s == 0.004
    (tmp_path / "models" / "local.yaml").write_text("engines: {default: {nope: 1}}\n")
    assert not reloader.check(force=True)
    assert "backends.local.perf_model" in (reloader.last_error or "") and len(applied) == 1


def test_the_replays_command_line_model_wins_for_the_backends_it_names(tmp_path: Path) -> None:
    _write(tmp_path)
    named = read_perf_model_file(tmp_path / "models" / "local.yaml")
    assert named.default_engine.prefill_per_token_s == 0.002
    policy_models = PerfModel({"local": named.default_engine, "gpu": named.default_engine}, {})
    cli = PerfModel({"gpu": EngineModel(prefill_fixed_s=0.9)}, {})
    merged = with_overrides(cli, policy_models)
    assert merged.engine("local").prefill_per_token_s == 0.002 and merged.engine("gpu").prefill_fixed_s == 0.9
    assert with_overrides(cli, None) is cli
