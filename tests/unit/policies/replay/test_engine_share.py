"""`replay --engine-share NAME=SHARE`: step times fitted where the engine's steps got one share of a core
carried to a window where they got another (the same CPU seconds a step), recorded by --calibrate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.perf_model import EngineModel, PerfModelError
from policies.perf_model_file import read_perf_model_file
from policies.replay.cli import main
from policies.replay.engine_share import parse_shares
from tests.unit.policies.replay.test_calibrate_out import window  # noqa: F401 (a fixture)

ALL_LOCAL = """version: 1
backends:
  local: {kind: engine, model: smollm2}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
rules:
  - {name: all-local, route: [local]}
"""


def test_step_terms_scale_by_the_ratio_of_shares_and_the_overhead_does_not() -> None:
    model = EngineModel(prefill_fixed_s=0.1, prefill_per_token_s=0.001, decode_fixed_s=0.01, decode_per_seq_s=0.002,
                        decode_per_context_token_s=1e-6, request_overhead_s=0.05, frontend_service_s=0.01, cpu_share=0.8)
    busier = model.at_cpu_share(0.4)
    assert busier.cpu_share == 0.4 and "CPU share 0.8 → 0.4" in busier.source
    assert busier.decode_time(8, 1000) == pytest.approx(2 * model.decode_time(8, 1000))
    assert busier.prefill_time(64, 10) == pytest.approx(2 * model.prefill_time(64, 10))
    assert (busier.request_overhead_s, busier.frontend_service_s) == (0.05, 0.01)
    assert busier.at_cpu_share(0.8).decode_time(8, 1000) == pytest.approx(model.decode_time(8, 1000))


def test_a_model_without_a_recorded_share_cannot_be_carried() -> None:
    with pytest.raises(PerfModelError, match="cpu_share is not recorded"):
        EngineModel().at_cpu_share(0.5)
    with pytest.raises(PerfModelError, match="must be > 0"):
        EngineModel(cpu_share=0.5).at_cpu_share(0.0)


@pytest.mark.parametrize(("item", "error"), [("local", "NAME=SHARE"), ("local=x", "NAME=SHARE"),
                                             ("local=0", "SHARE > 0"), ("local=inf", "SHARE > 0"),
                                             ("other=0.5", "not an engine backend")])
def test_bad_shares_name_the_item(item: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_shares([item], ["local"])


def _replay(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    traffic = tmp_path / "t.jsonl"
    traffic.write_text("".join(json.dumps({"time": 0.5 * i, "team": "t", "model": "chat", "prompt_tokens": 32,
                                           "output_tokens": 21}) + "\n" for i in range(4)))
    (tmp_path / "p.yaml").write_text(ALL_LOCAL)
    (tmp_path / "m.json").write_text(json.dumps({"engines": {"local": {
        "prefill_fixed_s": 0.02, "prefill_per_token_s": 0.0, "decode_fixed_s": 0.01, "decode_per_seq_s": 0.0,
        "decode_per_context_token_s": 0.0, "cpu_share": 0.8}}}))
    capsys.readouterr()
    assert main([str(tmp_path / "p.yaml"), "--traffic", str(traffic), "--perf-model", str(tmp_path / "m.json"),
                 "--json", "-", *extra]) == 0
    return json.loads(capsys.readouterr().out)["policies"][0]


def test_a_busier_window_doubles_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One request at a time (0.5 s apart, each done in 0.02 + 20 × 0.01 s): E2E is its steps alone.
    same = _replay(tmp_path, capsys)
    busier = _replay(tmp_path, capsys, "--engine-share", "local=0.4")
    assert same["e2e_s"]["p50"] == pytest.approx(0.22)
    assert busier["e2e_s"]["p50"] == pytest.approx(0.44) and busier["ttft_s"]["p50"] == pytest.approx(0.04)


def test_calibrate_records_the_windows_share(window: tuple[Path, Path, float], tmp_path: Path,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    policy, ledger, t0 = window
    out = tmp_path / "fitted.json"
    args = [str(policy), "--ledger", str(ledger), "--since", str(t0 - 1), "--until", str(t0 + 120), "--json", "-"]
    assert main([*args, "--calibrate", "--calibrate-out", str(out), "--engine-share", "local=0.6"]) == 0
    fitted = read_perf_model_file(out).engine("local")
    assert fitted.cpu_share == 0.6
    capsys.readouterr()
    assert main([*args, "--perf-model", str(out), "--engine-share", "local=0.3"]) == 0  # carried to a busier one
    assert main([*args, "--engine-share", "nope=0.3"]) == 2
    assert "'nope' is not an engine backend" in capsys.readouterr().err
