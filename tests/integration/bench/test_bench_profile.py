"""`hybridgw bench --profile` against the real `hybridgw engine` (tiny random weights, CPU): it writes a
performance model file that loads, that a policy can name, and that carries the engine's own KV pool;
bad input ends with one clear line and no file."""

from __future__ import annotations

from pathlib import Path

from policies.loader import load_policy_file
from policies.perf_model_file import read_perf_model_file
from tests.integration.bench.conftest import bench
from tests.support import procs

SHORT = ("--profile-lengths", "16,400", "--profile-batches", "1,3", "--profile-contexts", "16,200",
         "--profile-decode-tokens", "6", "--profile-budget-probe", "256")
POLICY = """\
backends:
  local: {kind: engine, base_url: "http://127.0.0.1:9/v1", model: tiny-random, perf_model: models/engine.yaml}
models:
  chat:
    deployments: [{backend: local, model: tiny-random}]
rules:
  - {name: r, route: [local]}
"""


def test_profile_writes_a_model_file_a_policy_can_name(engine_url: str, tmp_path: Path) -> None:
    out = tmp_path / "models" / "engine.yaml"
    done = bench(engine_url, "--profile", "--profile-out", str(out), *SHORT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "prefill:" in done.stdout and "decode:" in done.stdout and "Traceback" not in done.stderr
    text = out.read_text()
    assert "#      1, " in text and "#      3, " in text  # the measured decode batches, as comments
    model = read_perf_model_file(out).default_engine
    assert model.source.startswith("hybridgw bench --profile 127.0.0.1:")
    # The engine's own KV pool and limits (its /v1/engine/state), not the built-in SmolLM2 figures.
    assert (model.num_blocks, model.kv_bytes_per_token, model.max_num_seqs) == (4096, 512, 64)
    # Fitted, not defaults (which term carries the time is up to this noisy machine's measurements).
    assert model.prefill_fixed_s + 400 * model.prefill_per_token_s > 0 and model.prefill_fixed_s != 0.060
    assert model.decode_fixed_s + model.decode_per_seq_s > 0 and model.decode_fixed_s != 0.0082
    (tmp_path / "policy.yaml").write_text(POLICY)
    loaded = load_policy_file(tmp_path / "policy.yaml", {})
    assert loaded.perf_model is not None and loaded.perf_model.engine("local") == model


def test_an_unreachable_engine_is_one_clear_line_and_no_file(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{procs.free_port()}"
    out = tmp_path / "m.yaml"
    done = bench(url, "--profile", "--model", "m", "--profile-out", str(out), *SHORT)
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.startswith("hybridgw bench --profile: ") and "cannot connect" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_profile_options_are_usage_errors(tmp_path: Path) -> None:
    done = bench("http://127.0.0.1:9", "--profile", "--model", "m", "--profile-lengths", "16,abc")
    assert done.returncode == 2 and "--profile-lengths takes positive whole numbers" in done.stderr
