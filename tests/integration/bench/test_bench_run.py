"""`hybridgw bench` against a real server with scripted timings: the definitions recover what the
server did (TTFT, ITL, TPOT, usage, backend header), and a run writes its JSON and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.integration.bench.conftest import Scripted, bench, results

TTFT_S, ITL_S, CHUNKS = 0.25, 0.05, 6
# No upper bounds in time (a loaded machine may read late): the lower bounds are the server's sleeps,
# and each request's own chunk arrivals pin the definitions (which chunk starts TTFT, what E2E spans).


def test_known_timings_are_recovered(scripted: Scripted, tmp_path: Path) -> None:
    model = f"m;ttft_ms={TTFT_S * 1000:g};itl_ms={ITL_S * 1000:g};chunks={CHUNKS};backends=local,openai"
    done = bench(
        scripted.url,
        "--model",
        model,
        "--isl",
        "fixed:40",
        "--osl",
        f"fixed:{CHUNKS}",
        "--requests",
        "8",
        "--warmup",
        "2",
        "--concurrency",
        "2",
        "--slo",
        "ttft:5000",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    s = results(tmp_path)["summary"]
    assert s["requests"] == 8 and s["ok"] == 8 and s["errors"] == {}
    assert TTFT_S <= s["ttft"]["p50"]  # the server slept before its first content: the role chunk at t=0 did not count
    assert s["itl"]["count"] == 8 * (CHUNKS - 1)
    # The gaps are the server's sleeps (lower bound); the count above catches a role or finish chunk.
    assert ITL_S * 0.8 <= s["itl"]["p50"] and ITL_S * 0.8 <= s["tpot"]["p50"]
    assert TTFT_S + (CHUNKS - 1) * ITL_S <= s["e2e"]["p50"]
    for r in (r for r in results(tmp_path)["requests"] if not r["warmup"]):
        arrivals = r["chunk_s"]  # every content chunk's arrival: the role-only and finish chunks are not among them
        assert len(arrivals) == CHUNKS and arrivals == sorted(arrivals)
        assert r["ttft_s"] == pytest.approx(arrivals[0] - r["send_s"])  # TTFT ends at the first content chunk
        assert r["e2e_s"] >= arrivals[-1] - r["send_s"] and r["e2e_s"] >= r["ttft_s"] + (CHUNKS - 1) * ITL_S * 0.8
        assert r["tpot_s"] == pytest.approx((r["e2e_s"] - r["ttft_s"]) / (CHUNKS - 1))  # usage said CHUNKS tokens
        assert r["itl_max_s"] == pytest.approx(max(b - a for a, b in zip(arrivals, arrivals[1:])))
    assert s["output_tokens"] == 8 * CHUNKS and s["input_tokens"] == 8 * 40  # the server's usage numbers
    assert s["backends"] == {"local": 0.5, "openai": 0.5}
    assert s["goodput"] == pytest.approx(s["request_throughput"])
    rows = list(csv.DictReader((tmp_path / "requests.csv").open()))
    assert len(rows) == 10 and sum(r["warmup"] == "True" for r in rows) == 2
    assert {r["prompt_tokens"] for r in rows} == {"40"} and {r["completion_tokens"] for r in rows} == {
        str(CHUNKS)
    }
    assert "TTFT" in done.stdout and "backends        local 50.0%, openai 50.0%" in done.stdout


def test_open_loop_completions_and_several_teams(scripted: Scripted, tmp_path: Path) -> None:
    done = bench(
        scripted.url,
        "--endpoint",
        "completions",
        "--model",
        "m;chunks=3;keys=ka,kb",
        "--rate",
        "40",
        "--requests",
        "12",
        "--api-key",
        "alpha=ka",
        "--api-key",
        "beta=kb",
        "--api-key",
        "gamma=wrong",
        "--preset",
        "short-in-short-out",
        "--length-scale",
        "0.1",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr  # some requests succeeded: the run itself did not fail
    body = results(tmp_path)
    by_team = {(r["team"], r["error"]) for r in body["requests"]}
    assert by_team == {("alpha", None), ("beta", None), ("gamma", "http_401")}
    assert body["summary"]["errors"] == {"http_401": 4} and body["summary"]["ok"] == 8
    assert all(r["content_chunks"] == 3 for r in body["requests"] if r["error"] is None)
    assert "wrong" not in (tmp_path / "results.json").read_text()  # keys are never written down


def test_duration_bounds_the_run(scripted: Scripted, tmp_path: Path) -> None:
    done = bench(
        scripted.url,
        "--model",
        "m;chunks=2;itl_ms=20",
        "--requests",
        "100000",
        "--duration",
        "1",
        "--concurrency",
        "2",
        "--isl",
        "8",
        "--osl",
        "2",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert 0 < results(tmp_path)["summary"]["requests"] < 100000


def test_a_kept_alive_connection_the_server_closed_is_not_a_failure(
    scripted: Scripted, tmp_path: Path
) -> None:
    # The server hangs up after every response (as one does when a keep-alive connection idles out):
    # the next request on that connection must go out on a new one, not count as a disconnect.
    done = bench(
        scripted.url,
        "--model",
        "m;chunks=2;hang_up",
        "--requests",
        "12",
        "--concurrency",
        "2",
        "--isl",
        "8",
        "--osl",
        "2",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert results(tmp_path)["summary"]["ok"] == 12
