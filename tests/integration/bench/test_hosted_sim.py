"""The simulated hosted API: its latency draws follow the profile, it refuses load above its rate
limit with 429s, and its usage matches OpenAI's counting — checked with the official SDK and with
`hybridgw bench` over real HTTP."""

from __future__ import annotations

import random
import statistics
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from policies.tokens import TokenCounter
from tests.fakes.hosted_profiles import PROFILES, RateLimit, draw, parse_profile, profile_for
from tests.integration.bench.conftest import REPO, bench, results
from tests.support import procs

FAST = "fast=50,80,200,20"  # TTFT median 50 ms, p90 80 ms; 200 ± 20 tokens/s


SEED = 7
# uvloop's timers count whole milliseconds: one of the simulator's sleeps may end up to 1 ms early.
TIMER_SLACK_S = 0.001


@pytest.fixture
def sim() -> Iterator[str]:
    """A fresh simulator for each test: its seeded draws start from the beginning (one test replays them)."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = procs.python_module(
        "tests.fakes.hosted_sim", "--port", str(port), "--rps-limit", "10", "--profile", FAST,
        "--seed", str(SEED),
    )
    with procs.running(cmd, f"{url}/v1/models", name="hosted-sim", cwd=REPO):
        yield url


def test_profile_draws_follow_their_parameters() -> None:
    _, fast = parse_profile(FAST)
    rng = random.Random(0)
    ttfts = sorted(fast.ttft(rng) for _ in range(20_000))
    assert ttfts[10_000] == pytest.approx(0.050, rel=0.03) and ttfts[18_000] == pytest.approx(0.080, rel=0.04)
    speeds = [1 / fast.gap_s(rng) for _ in range(20_000)]
    assert statistics.mean(speeds) == pytest.approx(200, rel=0.02)
    assert fast.output_tokens(rng, 7) <= 7
    assert profile_for("gpt-4o-mini-2024-07-18", PROFILES) is PROFILES["gpt-4o-mini"]
    with pytest.raises(ValueError, match="NAME=TTFT_MEDIAN_MS"):
        parse_profile("x=1,2")


def test_rate_limit_is_a_one_second_bucket() -> None:
    limit = RateLimit(5)
    assert [limit.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limit.allow(0.1) is False and limit.allow(0.2) is True  # refilled one token in 0.2 s at 5/s


def test_sdk_stream_and_usage_match_openais_counting(sim: str) -> None:
    client = openai.OpenAI(base_url=f"{sim}/v1", api_key="unused", max_retries=0)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three rivers."},
    ]
    stream = client.chat.completions.create(
        model="fast",
        messages=messages,
        max_tokens=12,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    usage = chunks[-1].usage
    assert len(content) == 12 and usage is not None and usage.completion_tokens == 12
    # cl100k: the sim's own count of OpenAI's formula agrees with the gateway's counter
    assert usage.prompt_tokens == TokenCounter().count_messages(messages, "cl100k_base")
    assert chunks[0].system_fingerprint == "hybridgw-hosted-sim"
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=messages, max_tokens=3)  # type: ignore[arg-type]
    assert raw.headers["x-simulated"] == "true" and raw.parse().usage.completion_tokens == 3  # type: ignore[union-attr]


def test_bench_sees_the_profile_and_429s_above_the_limit(sim: str, tmp_path: Path) -> None:
    done = bench(
        sim,
        "--model",
        "fast",
        "--rate",
        "40",
        "--requests",
        "40",
        "--isl",
        "20",
        "--osl",
        "8",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    s = results(tmp_path)["summary"]
    assert set(s["errors"]) == {"http_429"} and 10 <= s["ok"] < 40  # 10/s with a 1 s burst, offered 40/s
    assert s["output_tokens"] == 8 * s["ok"]
    # The answered requests drew, in the order they arrived, the first `ok` answers of the seeded
    # generator (a 429 draws nothing). Which record got which draw is unknown, but no client sees a token
    # before the simulator's sleeps for it are over: sorted, every measured time is at least its draw.
    # Load only adds to what is measured, so this holds on any machine; a simulator that slept less than
    # its profile (or ignored it) fails it. The draws themselves follow the profile (the test above).
    _, fast = parse_profile(FAST)
    rng = random.Random(SEED)
    drawn = [draw(fast, rng, 8) for _ in range(s["ok"])]
    assert all(d.output_tokens == 8 for d in drawn)  # the profile's lengths (median 200), cut at max_tokens
    ok = [r for r in results(tmp_path)["requests"] if r["error"] is None]
    assert len(ok) == s["ok"] and all(r["content_chunks"] == 8 for r in ok)
    pairs = zip(sorted(r["ttft_s"] for r in ok), sorted(d.ttft_s for d in drawn), strict=True)
    assert all(measured >= least - TIMER_SLACK_S for measured, least in pairs), (ok, drawn)
    pairs = zip(sorted(r["e2e_s"] for r in ok), sorted(d.least_e2e_s for d in drawn), strict=True)
    assert all(measured >= least - 8 * TIMER_SLACK_S for measured, least in pairs), (ok, drawn)
