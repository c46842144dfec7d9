"""`hybridgw policy check` and `hybridgw policy explain`, run as the user runs them."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import policies

EXAMPLES = Path(policies.__file__).parent / "examples"


def _hybridgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "policy", *args], capture_output=True, text=True,
                          timeout=120)


def test_check_reports_file_line_field_and_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  local: {kind: engine}\nmodels:\n  m:\n    deployment: []\n")
    run = _hybridgw("check", str(bad))
    assert run.returncode == 1
    assert f"{bad}:5: models.m.deployment: unknown field; did you mean 'deployments'?" in run.stderr
    assert f"{bad}:4: models.m.deployments: required field is missing" in run.stderr


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


REQUEST = {"team": "research", "headers": {"X-Priority": "high"},
           "body": {"model": "chat", "max_tokens": 200,
                    "messages": [{"role": "user", "content": "Summarise the contract in three bullet points."}]}}
FULL_ENGINE = {"engines": {"local": {"model": "smollm2", "kv_bytes_per_token": 23040, "block_size": 16,
                                     "num_blocks_total": 512, "num_blocks_free": 10, "num_running": 6,
                                     "num_waiting": 0, "decode_tokens_per_s": 120}},
               "time": "2026-11-26T23:30:00+01:00"}


def test_explain_prints_facts_and_the_spill_decision(tmp_path: Path) -> None:
    run = _hybridgw("explain", str(EXAMPLES / "spill_to_hosted.yaml"), "--request", str(_write(tmp_path, "r.json", REQUEST)),
                    "--state", str(_write(tmp_path, "s.json", FULL_ENGINE)), "--env", "OPENAI_API_KEY=sk-test")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "prompt_tokens           17 (o200k_base)" in out
    assert "expected_output_tokens  200 (max_tokens)" in out
    assert "blocks_needed           local=14" in out
    assert "local                   circuit closed, fresh state: 10/512 blocks free" in out
    assert "rule      local-then-spill (kv_fit)" in out
    assert "targets   openai (gpt-4o-mini)" in out
    assert "reason    local-then-spill: always → spill to openai: local: needs 14 KV blocks, 10 free" in out


def test_explain_says_an_engine_with_a_state_has_one_and_refuses_a_bare_engine_state(tmp_path: Path) -> None:
    request = str(_write(tmp_path, "r.json", REQUEST))
    run = _hybridgw("explain", str(EXAMPLES / "spill_to_hosted.yaml"), "--request", request,
                    "--state", str(_write(tmp_path, "s.json", FULL_ENGINE)), "--env", "OPENAI_API_KEY=sk-test")
    local = next(line for line in run.stdout.splitlines() if line.startswith("  local "))
    assert local.endswith("6 running, 0 waiting"), local  # not also ", state unknown"
    bare = _hybridgw("explain", str(EXAMPLES / "spill_to_hosted.yaml"), "--request", request,
                     "--state", str(_write(tmp_path, "e.json", FULL_ENGINE["engines"]["local"])))
    assert bare.returncode == 2
    assert "unknown keys in the state file" in bare.stderr and '{"engines": {"BACKEND": …}}' in bare.stderr


def test_explain_without_hosted_key_refuses_with_retry_after(tmp_path: Path) -> None:
    run = _hybridgw("explain", str(EXAMPLES / "spill_to_hosted.yaml"), "--request", str(_write(tmp_path, "r.json", REQUEST)),
                    "--state", str(_write(tmp_path, "s.json", FULL_ENGINE)), "--json")
    assert run.returncode == 0, run.stderr
    decision = json.loads(run.stdout)["decision"]
    assert decision["targets"] == [] and decision["refusal"] == "no_capacity"
    assert decision["retry_after_s"] >= 1.0


def test_explain_with_no_state_and_a_bad_request_file(tmp_path: Path) -> None:
    run = _hybridgw("explain", str(EXAMPLES / "long_prompts_to_hosted.yaml"), "--request",
                    str(_write(tmp_path, "r.json", {"model": "chat", "prompt": "x " * 4100})))
    assert run.returncode == 0, run.stderr
    assert "rule      long-prompts-hosted (first_match)" in run.stdout
    assert "local                   circuit closed, state unknown" in run.stdout
    bad = _hybridgw("explain", str(EXAMPLES / "spill_to_hosted.yaml"), "--request", str(tmp_path / "nope.json"))
    assert bad.returncode == 2 and "cannot read the request file" in bad.stderr
    unknown = _hybridgw("explain", str(EXAMPLES / "spill_to_hosted.yaml"), "--request",
                        str(_write(tmp_path, "u.json", {"model": "gpt-9", "messages": []})))
    assert unknown.returncode == 2 and "The model 'gpt-9' does not exist" in unknown.stderr


def test_explain_shows_slo_costs_predictions_and_bound(tmp_path: Path) -> None:
    # 30 requests queued ahead at 500 prefill tokens/s: local's predicted TTFT is far over the 0.9 s bound.
    state = {"engines": {"local": {"model": "smollm2", "block_size": 16, "num_blocks_total": 512,
                                   "num_blocks_free": 400, "num_waiting": 30, "prefill_tokens_per_s": 500}}}
    run = _hybridgw("explain", str(EXAMPLES / "slo_cost.yaml"), "--request", str(_write(tmp_path, "r.json", REQUEST)),
                    "--team", "default", "--state", str(_write(tmp_path, "s.json", state)),
                    "--env", "OPENAI_API_KEY=sk-test")
    assert run.returncode == 0, run.stderr
    assert "rule      slo-cost (slo_cost)" in run.stdout
    assert "targets   openai (gpt-4o-mini), local (smollm2)" in run.stdout
    assert "cheapest with ttft p95 ≤ 0.9s (slo 1s − 10%; once out, back below 0.72s): local: ttft p95 1." in run.stdout
    assert "live, $0 (out); openai: ttft p95 0.6s prior" in run.stdout


def test_explain_shows_a_team_yielding_its_share(tmp_path: Path) -> None:
    # 10 slots of 10 blocks each: support holds 4, over its share of 3.33; research, under its share
    # of 6.67, lacks 2.67 of it (it may claim 7); 2 slots are left.
    state = {"engines": {"local": {"model": "smollm2", "block_size": 16, "num_blocks_total": 100,
                                   "num_blocks_free": 100, "max_num_seqs": 64}},
             "reserved_blocks": {"local": 80},
             "teams": {"local": {"held": {"research": 4, "support": 4}, "claims": {"research": 7}}}}
    request = {"body": {"model": "chat", "max_tokens": 150, "messages": [{"role": "user", "content": "hi"}]}}
    args = ("explain", str(EXAMPLES / "team_fairness.yaml"), "--request", str(_write(tmp_path, "r.json", request)),
            "--state", str(_write(tmp_path, "s.json", state)), "--env", "OPENAI_API_KEY=sk-test")
    run = _hybridgw(*args, "--team", "support")
    assert run.returncode == 0, run.stderr
    assert "teams research holds 4, wants interactive, support holds 4, wants interactive" in run.stdout
    assert "targets   openai (gpt-4o-mini), local (smollm2)" in run.stdout
    assert "local: yields, support holds 4 of 10 slots, share 3.33 (weight 1 of 3): at or over its share, " \
           "and room for 2 while research holds 4, lacks 2.67" in run.stdout, run.stdout
    run = _hybridgw(*args, "--team", "research")
    assert "targets   local (smollm2), openai (gpt-4o-mini)" in run.stdout, run.stdout
    run = _hybridgw(*args, "--team", "support", "--header", "x-hybridgw-priority-class:batch")
    assert "batch yields to interactive demand (research)" in run.stdout, run.stdout


def test_check_and_explain_read_the_perf_model_files_a_policy_names(tmp_path: Path) -> None:
    text = (EXAMPLES / "slo_cost.yaml").read_text().replace("    model: smollm2\n  openai:",
                                                             "    model: smollm2\n    perf_model: local.yaml\n  openai:")
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    run = _hybridgw("check", str(policy), "--env", "OPENAI_API_KEY=sk-test")
    assert run.returncode == 1 and f"{policy}:11: backends.local.perf_model: " in run.stderr
    assert "local.yaml: cannot read the performance model" in run.stderr
    # 0.1 s per prefill step + 1 ms per token, one step: a ~200-token prompt on the idle engine is ~0.3 s.
    (tmp_path / "local.yaml").write_text("engines:\n  local: {prefill_fixed_s: 0.1, prefill_per_token_s: 0.001,"
                                         " max_num_batched_tokens: 100000}\n")
    assert _hybridgw("check", str(policy), "--env", "OPENAI_API_KEY=sk-test").returncode == 0
    state = {"engines": {"local": {"model": "smollm2", "block_size": 16, "num_blocks_total": 512,
                                   "num_blocks_free": 400}}}
    request = {"team": "default", "body": {"model": "chat", "max_tokens": 10, "messages": [
        {"role": "user", "content": " ".join(["word"] * 190)}]}}
    run = _hybridgw("explain", str(policy), "--request", str(_write(tmp_path, "r.json", request)),
                    "--state", str(_write(tmp_path, "s.json", state)), "--env", "OPENAI_API_KEY=sk-test")
    assert run.returncode == 0, run.stderr
    shown = re.search(r"local: ttft p95 ([\d.]+)s live, \$0 \(in\)", run.stdout)
    assert shown and 0.28 < float(shown.group(1)) < 0.32  # the built-in model would say ~0.13 s
