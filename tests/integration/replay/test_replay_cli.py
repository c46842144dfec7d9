"""`hybridgw replay` and `hybridgw size` run as the user runs them: files in, table / JSON / HTML out,
and bad input answered with a clear message and exit 2, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from observability.sqlite_store import SqliteStore
from observability.usage import UsageRecord

SPILL = """\
version: 1
backends:
  local: {kind: engine, model: smollm2, price: {usd_per_gpu_hour: 2.0}}
  openai: {kind: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY, requires_env: OPENAI_API_KEY}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: openai, model: gpt-4o-mini}
slos: {interactive: {ttft_p95_s: 1.0}}
rules:
  - {name: fit, strategy: kv_fit, local: [local], spill: [openai]}
"""
HOSTED = """\
version: 1
backends:
  openai: {kind: openai, base_url: https://api.openai.com/v1}
models:
  chat:
    deployments:
      - {backend: openai, model: gpt-4o-mini}
"""
PERF = "engines:\n  default: {num_blocks: 400, source: test engine}\nhosted:\n  default: {ttft_p50_s: 0.3, ttft_p95_s: 0.6}\n"


def _hybridgw(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # replay needs no key
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], check=False, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {"spill": tmp_path / "spill.yaml", "hosted": tmp_path / "hosted.yaml", "perf": tmp_path / "perf.yaml",
           "traffic": tmp_path / "traffic.jsonl"}
    out["spill"].write_text(SPILL)
    out["hosted"].write_text(HOSTED)
    out["perf"].write_text(PERF)
    lines = [json.dumps({"time": 1_800_000_000 + i * 0.05, "team": "a", "model": "chat",
                         "prompt_tokens": 200 + (i * 37) % 900, "output_tokens": 20 + (i * 13) % 200})
             for i in range(400)]
    out["traffic"].write_text("\n".join(lines) + "\n")
    return out


def test_replay_compares_policies_in_table_json_and_html(files: dict[str, Path], tmp_path: Path) -> None:
    report, data = tmp_path / "r.html", tmp_path / "r.json"
    run = _hybridgw("replay", str(files["spill"]), str(files["hosted"]), "--traffic", str(files["traffic"]),
                    "--perf-model", str(files["perf"]), "--html", str(report), "--json", str(data))
    assert run.returncode == 0, run.stderr
    assert "spill.yaml" in run.stdout and "hosted.yaml" in run.stdout and "TTFT-SLO attainment" in run.stdout
    summaries = {Path(p["policy"]).name: p for p in json.loads(data.read_text())["policies"]}
    spill, hosted = summaries["spill.yaml"], summaries["hosted.yaml"]
    assert spill["served_by"]["local"] > 0 and spill["served_by"]["openai"] > 0  # requires_env ignored
    assert hosted["served_by"] == {"openai": 400}
    assert hosted["total_cost_usd"] == pytest.approx(hosted["all_hosted_cost_usd"])
    assert spill["hosted_cost_usd"] < hosted["hosted_cost_usd"]
    assert spill["engines"]["local"]["kv_occupancy"] and max(spill["engines"]["local"]["kv_occupancy"]) > 0
    page = report.read_text()
    assert page.count("<svg") >= 4 and "<script" not in page and "http" not in page.split("<body>")[1].split("<svg")[0]


def test_a_team_budget_refuses_in_the_replay_and_the_report_says_so(files: dict[str, Path], tmp_path: Path) -> None:
    # gpt-4o-mini at litellm's price; the 400 requests cost ~$0.016 all-hosted: $0.004 a day runs out early.
    budget = tmp_path / "budget.yaml"
    budget.write_text(HOSTED + "teams:\n  a: {budget: {usd_per_day: 0.004}}\n")
    data = tmp_path / "r.json"
    run = _hybridgw("replay", str(files["hosted"]), str(budget), "--traffic", str(files["traffic"]),
                    "--perf-model", str(files["perf"]), "--json", str(data))
    assert run.returncode == 0, run.stderr
    assert "refused by budget" in run.stdout
    summaries = {Path(p["policy"]).name: p for p in json.loads(data.read_text())["policies"]}
    unlimited, capped = summaries["hosted.yaml"], summaries["budget.yaml"]
    assert unlimited["refused"] == {} and 0 < capped["refused"]["budget"] < 400
    assert capped["served_by"]["openai"] + capped["refused"]["budget"] == 400
    assert capped["hosted_cost_usd"] <= 0.004 < unlimited["hosted_cost_usd"]


def test_replay_reads_the_usage_ledger(files: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "usage.sqlite3"
    now = time.time()
    store = SqliteStore(db)
    store.write_batch([UsageRecord(
        request_id=f"r{i}", time=now - 600 + i, team="a", key_id="k", model_alias="chat", backend="openai",
        model="gpt-4o-mini", rule="fit", status="ok", http_status=200, stream=True, prompt_tokens=300,
        completion_tokens=50, estimated_prompt_tokens=300, estimated_completion_tokens=100, usage_source="upstream",
        cost_usd=0.0, ttft_s=0.3, itl_p50_s=0.01, itl_p95_s=0.02, itl_max_s=0.03, e2e_s=1.0) for i in range(50)])
    store.close()
    run = _hybridgw("replay", str(files["spill"]), "--ledger", str(db), "--since", "1h", "--json", "-")
    assert run.returncode == 0, run.stderr
    recorded, replayed = json.loads(run.stdout)["policies"]
    assert recorded["policy"] == "recorded (as served)" and recorded["served_by"] == {"openai": 50}
    assert recorded["ttft_s"]["p50"] == pytest.approx(0.3) and recorded["e2e_s"]["p95"] == pytest.approx(1.0)
    assert replayed["requests"] == 50 and replayed["served_by"].get("local", 0) > 0


def test_replay_with_the_gateways_poll_clock(files: dict[str, Path]) -> None:
    run = _hybridgw("replay", str(files["spill"]), "--traffic", str(files["traffic"]), "--poll-clock", "--json", "-")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["meta"]["poll_clock"] == "period" and out["policies"][0]["requests"] == 400
    assert sum(out["policies"][0]["served_by"].values()) == 400


@pytest.mark.parametrize("case", ["empty", "unknown_field", "no_ledger", "garbage_ledger", "empty_window",
                                  "bad_perf", "bad_since", "calibrate_without_ledger", "bad_poll_clock"])
def test_bad_input_is_a_clear_error_and_exit_2(files: dict[str, Path], tmp_path: Path, case: str) -> None:
    args = ["replay", str(files["spill"]), "--traffic", str(files["traffic"])]
    expected = ""
    if case == "empty":
        (tmp_path / "empty.jsonl").write_text("")
        args[3], expected = str(tmp_path / "empty.jsonl"), "no requests to replay"
    elif case == "unknown_field":
        files["spill"].write_text(SPILL.replace("rules:\n  - {name: fit,", "rules:\n  - {nam: x, name: fit,"))
        expected = f"{files['spill']}:12: rules[0].nam: unknown field"
    elif case == "no_ledger":
        args[2:4], expected = ["--ledger", str(tmp_path / "usage.sqlite3")], "no usage ledger there"
    elif case == "garbage_ledger":
        (tmp_path / "usage.sqlite3").write_bytes(b"not a database" * 100)
        args[2:4], expected = ["--ledger", str(tmp_path / "usage.sqlite3")], "cannot read the usage ledger"
    elif case == "empty_window":
        SqliteStore(tmp_path / "usage.sqlite3").close()
        args[2:4], expected = ["--ledger", str(tmp_path / "usage.sqlite3")], "no requests to replay"
    elif case == "bad_perf":
        (tmp_path / "perf.yaml").write_text("engines:\n  local: {decode_ms: 3}\n")
        args += ["--perf-model", str(tmp_path / "perf.yaml")]
        expected = "engines.local: unknown field 'decode_ms'"
    elif case == "bad_since":
        args[2:4] = ["--ledger", str(tmp_path / "usage.sqlite3"), "--since", "last tuesday"]
        SqliteStore(tmp_path / "usage.sqlite3").close()
        expected = "cannot read the time 'last tuesday'"
    elif case == "calibrate_without_ledger":
        args, expected = [*args, "--calibrate"], "--calibrate fits the engines to the requests they served"
    elif case == "bad_poll_clock":
        args, expected = [*args, "--poll-clock=sometimes"], "invalid choice: 'sometimes'"
    run = _hybridgw(*args)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert expected in run.stderr
    assert "Traceback" not in run.stderr


def test_size_recommends_from_the_histogram(files: dict[str, Path]) -> None:
    run = _hybridgw("size", "--traffic", str(files["traffic"]), "--percentile", "90", "--ttft-slo", "2",
                    "--perf-model", str(files["perf"]), "--policy", str(files["spill"]), "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)["all traffic"]
    totals = sorted(200 + (i * 37) % 900 + 20 + (i * 13) % 200 for i in range(400))
    assert result["max_context"] == -(-totals[359] // 16) * 16  # nearest-rank p90, whole blocks
    assert result["local_share"] == pytest.approx(sum(t <= result["max_context"] for t in totals) / 400)
    assert result["replicas"] >= 1 and result["spill_cost_usd_per_hour"] > 0
    text = _hybridgw("size", "--traffic", str(files["traffic"]), "--windows", "0-12,12-24")
    assert text.returncode == 0 and "max context" in text.stdout and "UTC" in text.stdout
    bad = _hybridgw("size", "--traffic", str(files["traffic"]), "--windows", "8-3")
    assert bad.returncode == 2 and "--windows" in bad.stderr and "Traceback" not in bad.stderr


def test_help_lists_the_commands() -> None:
    run = _hybridgw("--help")
    assert "replay" in run.stdout and "size" in run.stdout


def test_size_snippet_replays_as_a_policy(files: dict[str, Path], tmp_path: Path) -> None:
    snippet, model = tmp_path / "sized.yaml", tmp_path / "sized-model.yaml"
    run = _hybridgw("size", "--traffic", str(files["traffic"]), "--percentile", "95", "--snippet",
                    "--model-out", str(model))
    assert run.returncode == 0, run.stderr
    snippet.write_text(run.stdout)
    replayed = _hybridgw("replay", str(snippet), "--traffic", str(files["traffic"]), "--perf-model", str(model),
                         "--json", "-")
    assert replayed.returncode == 0, replayed.stderr
    served = json.loads(replayed.stdout)["policies"][0]["served_by"]
    assert served.get("hosted", 0) > 0  # beyond the p95 context: spilled
    assert sum(v for k, v in served.items() if k.startswith("engine-")) >= 0.8 * 400  # most stay local


def test_replay_applies_the_limits_stored_with_the_ledgers_keys_and_replays_its_refusals(
        files: dict[str, Path], tmp_path: Path) -> None:
    """The gateway's data dir: the ledger names each request's key; keys.sqlite3 beside it holds one key
    with its own $0.004-a-day budget (`hybridgw keys create --usd-per-day`). 60 requests, the last 10 of
    them refused by the gateway (429, estimate kept): all 60 are replayed, and the budget binds."""
    from gateway.key_spec import KeySpec  # the gateway's own key store, as `hybridgw keys create` fills it
    from gateway.key_store import KeyStore
    from observability.limits_config import TeamLimits

    store = KeyStore.in_data_dir(tmp_path)
    capped = store.create("a", "capped", KeySpec(limits=TeamLimits(usd_per_day=0.004)))[1].key_id
    store.close()
    now = time.time()
    ledger = SqliteStore(tmp_path / "usage.sqlite3")
    ledger.write_batch([UsageRecord(
        request_id=f"r{i}", time=now - 600 + i, team="a", key_id=capped, model_alias="chat",
        backend="" if i >= 50 else "openai", model="gpt-4o-mini", rule="h", status="rejected" if i >= 50 else "ok",
        http_status=429 if i >= 50 else 200, stream=True, prompt_tokens=0 if i >= 50 else 3000,
        completion_tokens=0 if i >= 50 else 500, estimated_prompt_tokens=3000, estimated_completion_tokens=500,
        usage_source="upstream", cost_usd=0.0, ttft_s=None if i >= 50 else 0.3, itl_p50_s=0.01, itl_p95_s=0.02,
        itl_max_s=0.03, e2e_s=1.0) for i in range(60)])
    ledger.close()
    args = ("replay", str(files["hosted"]), "--ledger", str(tmp_path / "usage.sqlite3"), "--since", "1h", "--json", "-")
    recorded, replayed = json.loads(_hybridgw(*args).stdout)["policies"]
    assert recorded["requests"] == replayed["requests"] == 60  # the ledger's refusals are replayed too
    assert recorded["served_by"] == {"openai": 50} and sum(recorded["refused"].values()) == 10
    # gpt-4o-mini: 3000 in, 500 out = $0.00075 a request: the key's $0.004 covers 5 of them.
    assert replayed["served_by"] == {"openai": 5} and replayed["refused"] == {"budget": 55}
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (tmp_path / "usage.sqlite3").rename(elsewhere / "usage.sqlite3")  # no key store beside it: no key limits
    run = _hybridgw(*args[:3], str(elsewhere / "usage.sqlite3"), *args[4:])
    assert json.loads(run.stdout)["policies"][1]["served_by"] == {"openai": 60}
    run = _hybridgw(*args[:3], str(elsewhere / "usage.sqlite3"), *args[4:], "--keys", str(tmp_path / "absent"))
    assert run.returncode == 2 and "no key store there" in run.stderr


def test_policies_replayed_in_parallel_processes_give_the_same_summaries(files: dict[str, Path]) -> None:
    def summaries(*extra: str) -> list[dict]:
        run = _hybridgw("replay", str(files["spill"]), str(files["hosted"]), "--traffic", str(files["traffic"]),
                        "--perf-model", str(files["perf"]), "--json", "-", *extra)
        assert run.returncode == 0, run.stderr
        return [{k: v for k, v in p.items() if k != "sim_seconds"} for p in json.loads(run.stdout)["policies"]]

    serial = summaries()
    assert summaries("--jobs", "2") == serial and serial[0]["served_by"]["local"] > 0
    bad = _hybridgw("replay", str(files["spill"]), "--traffic", str(files["traffic"]), "--jobs", "0")
    assert bad.returncode == 2 and "--jobs must be ≥ 1" in bad.stderr
