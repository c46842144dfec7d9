"""What a new user tries first with the `hybridgw` command, as a real process: a key scoped to the
embedded default policy's alias (served by a spawned engine), and wrong values for its flags, each
refused with one line that names the flag (never a validation dump); a port in use, refused at once
with one line, with one worker as with several; `shadow` against a store or a folder that is not there;
`report` on a ledger with refused requests, without loading litellm for them; a data dir that cannot be made;
report and router eval files written to a folder that is not there."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support import procs
from tests.support.keys import create_key
from tests.support.procs import hybridgw


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYBRIDGW_POLICY", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["HYBRIDGW_DATA_DIR"] = str(data_dir)
    return subprocess.run(hybridgw(*args), env=env, capture_output=True, text=True, timeout=120)


def test_a_key_scoped_to_the_default_policys_aliases_is_made(tmp_path: Path) -> None:
    """smollm2 is served by a spawned engine (no URL until `serve` starts it), gpt-4o-mini by a backend
    whose requires_env (OPENAI_API_KEY) this shell need not hold: the gateway's environment does."""
    made = _run(tmp_path, "keys", "create", "--team", "default", "--model", "smollm2", "--model", "gpt-4o-mini",
                "--rpm", "10")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("sk-hgw-")
    listing = _run(tmp_path, "keys", "list")
    assert "smollm2,gpt-4o-mini" in listing.stdout


CREATE = ("create", "--team", "default")


@pytest.mark.parametrize(("args", "said"), [
    ((*CREATE, "--rpm", "0"), "--rpm: "),
    ((*CREATE, "--tpm", "-5"), "--tpm: "),
    ((*CREATE, "--usd-per-day", "-1"), "--usd-per-day: "),
    ((*CREATE, "--expires", "3x"), "--expires: '3x' is not a duration"),
    (("rotate", "0123abcd", "--grace", "-5"), "--grace: '-5' is not a duration"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag(tmp_path: Path, args: tuple[str, ...], said: str) -> None:
    refused = _run(tmp_path, "keys", *args)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hybridgw keys: {said}"), refused.stderr
    assert "pydantic" not in refused.stderr and "Traceback" not in refused.stderr


POLICY = """version: 1
backends:
  up: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-x}
models:
  m: {deployments: [{backend: up, model: m}]}
teams:
  default: {}
rules:
  - {name: all, route: [up]}
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, workers: str) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(POLICY)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        refused = _run(tmp_path / "data", "serve", "--config", str(config), "--port", port, "--workers", workers)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.strip() == f"hybridgw serve: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
    assert "serving on" not in refused.stdout


def test_shadow_export_to_a_missing_folder_or_from_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    missing = _run(tmp_path, "shadow", "export", "--team", "default", "--out", str(tmp_path / "no" / "pairs.csv"))
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("hybridgw shadow: cannot write "), missing.stderr
    with socket.socket() as closed:  # a port nothing listens on once this closes
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = _run(tmp_path, "shadow", "--redis-url", f"redis://127.0.0.1:{port}", "count", "--team", "default")
    assert down.returncode == 1
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybridgw shadow: the pair store is unavailable: "), down.stderr


def test_report_on_a_ledger_with_refused_requests_does_not_load_litellm_and_a_bad_out_is_one_line(fake_upstream: str, tmp_path: Path) -> None:
    """A refused request (an unknown model: alias `unknown`, no tokens) has nothing to price: the report
    must not import litellm (seconds) for it, as every real ledger has some. `--out` in a missing folder:
    one line."""
    config = tmp_path / "policy.yaml"
    config.write_text(f"""version: 1
backends:
  up: {{kind: openai, base_url: "{fake_upstream}/v1", api_key: k, price: {{input_usd_per_mtok: 1, output_usd_per_mtok: 2}}}}
models:
  m: {{deployments: [{{backend: up, model: m}}]}}
teams:
  default: {{}}
rules:
  - {{name: all, route: [up]}}
""")
    data = tmp_path / "data"
    key = create_key(data, "default", config)
    with procs.gateway(config, {"HYBRIDGW_DATA_DIR": str(data)}, "gateway-first-steps") as (url, _):
        for model, status in (("m", 200), ("nope", 404)):
            answer = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
            assert answer.status_code == status, answer.text
    probe = ("import sys; from gateway.cli import main; rc = main(sys.argv[1:]); "
             "print('litellm loaded' if 'litellm' in sys.modules else 'litellm not loaded', rc, file=sys.stderr)")
    report = subprocess.run([sys.executable, "-c", probe, "report", "--data-dir", str(data), "--config", str(config),
                             "--since", "1h"], capture_output=True, text=True, timeout=120)
    assert "requests               2" in report.stdout, report.stdout + report.stderr
    assert "unknown priced as unpriced" in report.stdout
    assert report.stderr.strip().endswith("litellm not loaded 0"), report.stderr
    nowhere = subprocess.run(hybridgw("report", "--data-dir", str(data), "--config", str(config), "--out",
                                      str(tmp_path / "no" / "report.txt")), capture_output=True, text=True, timeout=120)
    assert nowhere.returncode == 1
    assert nowhere.stderr.strip().startswith("hybridgw report: cannot write "), nowhere.stderr


@pytest.mark.parametrize("command", [("keys", "list"), ("serve", "--port", "0")])
def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refused = _run(tmp_path, command[0], "--data-dir", str(blocker / "data"), *command[1:])
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hybridgw {command[0]}: cannot use the data dir "), refused.stderr


def test_router_eval_with_html_in_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "eval.csv"
    data.write_text('prompt,weak,strong\n"What is 2+2?",True,True\n"Prove it",False,True\n"Capital of France?",True,True\n')
    refused = _run(tmp_path, "router", "eval", str(data), "--resamples", "10", "--html", str(tmp_path / "no" / "e.html"))
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith("hybridgw router eval: cannot write: "), refused.stderr
