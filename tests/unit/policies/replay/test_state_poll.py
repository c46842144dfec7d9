"""`hybridgw replay --state-poll NAME=SECONDS`: the period of the gateway's polls of an engine given on the
command line (over the model file's `state_poll_s`), checked, and the replay's answer following it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.replay import cli
from policies.replay.poll_clock import period_clock
from policies.replay.state_poll import parse_state_polls, with_state_polls
from tests.unit.policies.replay.support import KV_FIT_POLICY_FILE, PERF

POLICY = KV_FIT_POLICY_FILE
# support.SIMPLE_ENGINE (a prefill step 0.1 s, a decode step 0.01 s, KV no limit), polled every millisecond.
MODEL = {"engines": {"default": {"source": "test", "prefill_fixed_s": 0.1, "prefill_per_token_s": 0.0,
                                 "decode_fixed_s": 0.01, "decode_per_seq_s": 0.0, "decode_per_context_token_s": 0.0,
                                 "num_blocks": 100, "max_model_len": 4096, "state_poll_s": 0.001}},
         "hosted": {"default": {"source": "test", "ttft_p50_s": 0.2, "ttft_p95_s": 0.2, "tokens_per_s_p50": 1000,
                                "tokens_per_s_p05": 1000}}}
T0 = 1_800_000_000.0


def test_state_polls_parse_per_engine() -> None:
    assert parse_state_polls(["local=1.5", "gpu=0.25", "local=2"], ["local", "gpu"]) == {"local": 2.0, "gpu": 0.25}
    assert parse_state_polls([], ["local"]) == {}


@pytest.mark.parametrize("item", ["local=0", "local=-1", "local=nan", "local=inf", "local=soon", "local", "local="])
def test_a_bad_period_is_refused_naming_the_item(item: str) -> None:
    with pytest.raises(ValueError, match=f"--state-poll '{item}': give NAME=SECONDS with SECONDS > 0 and finite"):
        parse_state_polls([item], ["local"])


def test_an_unknown_engine_is_refused_naming_the_engines() -> None:
    with pytest.raises(ValueError, match=r"'openai' is not an engine backend of the policy \(local\)"):
        parse_state_polls(["openai=1"], ["local"])


def test_the_period_goes_into_the_named_engines_model_only() -> None:
    perf = with_state_polls(PERF, {"local": 1.5})
    assert perf.engine("local").state_poll_s == 1.5 and "--state-poll" in perf.engine("local").source
    assert perf.engine("gpu").state_poll_s == PERF.default_engine.state_poll_s == 0.0
    assert with_state_polls(PERF, {}) is PERF


def _replay(tmp_path: Path, *args: str) -> dict:
    """Ten requests 15 ms apart (the first prefill step, 0.1 s, ends inside the burst) replayed by the CLI."""
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "m.json").write_text(json.dumps(MODEL))
    lines = [json.dumps({"time": T0 + 0.015 * i, "team": "t", "model": "chat", "prompt_tokens": 20,
                         "output_tokens": 10, "max_tokens": 10}) for i in range(10)]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.json"
    code = cli.main([str(tmp_path / "p.yaml"), "--traffic", str(tmp_path / "t.jsonl"), "--perf-model",
                     str(tmp_path / "m.json"), "--json", str(out), *args])
    assert code == 0
    return json.loads(out.read_text())


def test_the_cli_replays_on_the_period_given(tmp_path: Path) -> None:
    seed = str(next(s for s in range(100) if period_clock(0.0, 1.0, s, "local").next + 1.0 > 0.2))
    fresh = _replay(tmp_path, "--poll-clock", "--seed", seed)  # the file's period: a poll every millisecond
    assert fresh["meta"]["poll_clock"] == "period"
    # Fresh, the eighth (105 ms) sees the second step's queue, 4 (the engine counts what a running step took
    # as waiting), and goes local.
    assert fresh["policies"][0]["served_by"] == {"local": 6, "openai": 4}
    # Polled every second: the burst is routed on the poll before it (an idle engine), counting what it sent
    # since as waiting: the sixth sees 5 and spills. --state-poll alone turns the poll clock on.
    stale = _replay(tmp_path, "--state-poll", "local=1", "--seed", seed)
    assert stale["meta"]["poll_clock"] == "period" and "--state-poll" in stale["meta"]["models"]["local"]
    assert stale["policies"][0]["served_by"] == {"local": 5, "openai": 5}
    # Given the file's own period back, the answer is the file's.
    again = _replay(tmp_path, "--state-poll", "local=0.001", "--seed", seed)
    assert again["policies"][0]["served_by"] == fresh["policies"][0]["served_by"]


@pytest.mark.parametrize(("args", "message"), [(["--state-poll", "local=0"], "SECONDS > 0 and finite"),
                                               (["--state-poll", "local=inf"], "SECONDS > 0 and finite"),
                                               (["--state-poll", "openai=1"], "not an engine backend")])
def test_the_cli_answers_a_bad_period_with_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        args: list[str], message: str) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "t.jsonl").write_text(json.dumps({"time": T0, "team": "t", "model": "chat", "prompt_tokens": 20,
                                                  "output_tokens": 10}) + "\n")
    assert cli.main([str(tmp_path / "p.yaml"), "--traffic", str(tmp_path / "t.jsonl"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
