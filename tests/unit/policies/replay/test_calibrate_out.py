"""`hybridgw replay --calibrate --calibrate-out FILE`: the model fitted to one ledger window is written as a
performance model file that `--perf-model` reads back to predict another window (the held-out check)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from observability.sqlite_store import SqliteStore
from observability.usage import UsageRecord
from policies.perf_model_file import read_perf_model_file
from policies.replay.cli import main
from tests.unit.policies.replay.support import KV_FIT_POLICY_FILE

POLICY = KV_FIT_POLICY_FILE


def _usage(i: int, when: float, backend: str, ttft: float) -> UsageRecord:
    return UsageRecord(request_id=f"r{i}", time=when, team="t", key_id="k", model_alias="chat", backend=backend,
                       model="m", rule="fit", status="ok", http_status=200, stream=True, prompt_tokens=40 + i % 7,
                       completion_tokens=12, estimated_prompt_tokens=40, estimated_completion_tokens=12,
                       usage_source="upstream", cost_usd=0.0, ttft_s=ttft, itl_p50_s=0.01, itl_p95_s=0.02,
                       itl_max_s=0.03, e2e_s=ttft + 0.3)


@pytest.fixture
def window(tmp_path: Path) -> tuple[Path, Path, float]:
    t0 = time.time() - 3600  # within the store's retention
    store = SqliteStore(tmp_path / "usage.sqlite3")
    # Local requests slower the more arrive together (a burst after a quiet minute); hosted ones among them.
    quiet = [_usage(i, t0 + i, "local", 0.2) for i in range(10)]
    burst = [_usage(100 + i, t0 + 60 + 0.02 * i, "local" if i % 3 else "openai", 0.2 + 0.03 * i) for i in range(30)]
    store.write_batch(quiet + burst)
    store.close()
    (tmp_path / "policy.yaml").write_text(POLICY)
    return tmp_path / "policy.yaml", tmp_path / "usage.sqlite3", t0


def test_the_fitted_model_is_written_and_predicts_another_window(window: tuple[Path, Path, float], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    policy, ledger, t0 = window
    out = tmp_path / "fitted.json"
    args = [str(policy), "--ledger", str(ledger), "--since", str(t0 - 1), "--until", str(t0 + 120), "--json", "-"]
    assert main([*args, "--calibrate", "--calibrate-out", str(out)]) == 0
    fitted = read_perf_model_file(out)
    local = fitted.engine("local")
    assert "fitted to 30 requests local served" in local.source and "front end" in local.source
    assert local.request_overhead_s + local.frontend_service_s > 0  # the burst's TTFTs grew beyond the steps
    assert fitted.hosted_model("openai").ttft_p50_s == pytest.approx(0.2 + 0.03 * 12)  # its 5th of 10, as served
    capsys.readouterr()
    assert main([*args[:5], "--until", str(t0 + 30), "--perf-model", str(out), "--json", "-"]) == 0  # another window: the quiet one
    assert '"policies"' in capsys.readouterr().out


def test_calibrate_out_without_calibrate_is_refused(window: tuple[Path, Path, float], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    policy, ledger, t0 = window
    assert main([str(policy), "--ledger", str(ledger), "--since", str(t0 - 1), "--until", str(t0 + 120),
                 "--calibrate-out", str(tmp_path / "x.json")]) == 2
    assert "--calibrate-out writes what --calibrate fitted: it needs --calibrate" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_the_burst_budget_a_ledger_was_recorded_with_is_kept_and_can_be_given(
        window: tuple[Path, Path, float], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The ledger does not say what burst budget its engine had: the model's (the engine's default 256 where
    # the file does not name it), or --burst-batched-tokens for one recorded before the burst (0).
    policy, ledger, t0 = window
    out = tmp_path / "fitted.json"
    args = [str(policy), "--ledger", str(ledger), "--since", str(t0 - 1), "--until", str(t0 + 120),
            "--json", "-", "--calibrate", "--calibrate-out", str(out)]
    assert main(args) == 0
    assert read_perf_model_file(out).engine("local").burst_batched_tokens == 256
    assert main([*args, "--burst-batched-tokens", "0"]) == 0
    local = read_perf_model_file(out).engine("local")
    assert local.burst_batched_tokens == 0 and "no burst budget" in local.source
    capsys.readouterr()
    assert main([*args, "--burst-batched-tokens", "-1"]) == 2
    assert "--burst-batched-tokens must be ≥ 0" in capsys.readouterr().err
