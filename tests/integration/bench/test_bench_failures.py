"""Bad input ends with a clear message, exit status 1 and the partial results saved, never a traceback:
an unreachable URL, a 401, a malformed stream, a server that stalls or drops, a user's Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.bench.conftest import REPO, Scripted, bench, bench_cmd, results
from tests.support import procs


@pytest.mark.parametrize(
    ("model", "error", "says"),
    [
        ("m;status=401", "http_401", "scripted 401"),
        ("m;malformed=1", "malformed_sse", "not JSON"),
        ("m;stall_after=2", "stall", "no byte for 0.5 s mid-stream"),
        ("m;drop_after=2", "disconnect", "closed the connection"),
        ("m;not_streamed", "not_streamed", "not an event stream"),
    ],
)
def test_a_failing_server_gives_a_message_and_saved_results(
    scripted: Scripted, tmp_path: Path, model: str, error: str, says: str
) -> None:
    done = bench(
        scripted.url,
        "--model",
        model,
        "--requests",
        "3",
        "--timeout",
        "0.5",
        "--isl",
        "8",
        "--osl",
        "4",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and f"every request failed; first: {error}: " in done.stderr
    assert says in done.stderr
    body = results(tmp_path)
    assert [r["error"] for r in body["requests"]] == [error] * 3
    assert (tmp_path / "requests.csv").read_text().count(error) >= 3


def test_an_unreachable_url_gives_up_early(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{procs.free_port()}"
    done = bench(url, "--model", "m", "--requests", "500", "--out", str(tmp_path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "gave up after 8 requests: connect: cannot connect to 127.0.0.1" in done.stderr
    assert results(tmp_path)["summary"]["errors"] == {"connect": 8}
    no_model = bench(url, "--requests", "5", "--out", str(tmp_path / "b"))
    assert (
        no_model.returncode == 1 and "cannot reach" in no_model.stderr and "Traceback" not in no_model.stderr
    )


@pytest.mark.parametrize(("sig", "why"), [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")])
def test_ctrl_c_or_sigterm_keeps_what_was_measured(
    scripted: Scripted, tmp_path: Path, sig: int, why: str
) -> None:
    start = scripted.requests_received()
    proc = subprocess.Popen(
        bench_cmd(
            scripted.url,
            "--model",
            "m;chunks=2;itl_ms=10",
            "--requests",
            "100000",
            "--concurrency",
            "2",
            "--isl",
            "8",
            "--osl",
            "2",
            "--out",
            str(tmp_path),
        ),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        procs.wait_until(lambda: scripted.requests_received() >= start + 10, "the bench to get going")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1 and "Traceback" not in err
    assert f"stopped early: {why} (partial results saved)" in err
    body = results(tmp_path)
    assert body["stopped"] == why and body["summary"]["ok"] >= 5
