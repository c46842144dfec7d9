"""`hybridgw bench` against the real `hybridgw engine` (tiny random-weight Llama with SmolLM2's
tokenizer on CPU): prompts built with the server's own tokenizer hit their length exactly as the
engine counts it, forced output lengths arrive in full, tenants' shared prefixes reach the engine."""

from __future__ import annotations

from pathlib import Path

from tests.integration.bench.conftest import bench, results


def test_server_tokenizer_prompts_hit_the_engines_count(engine_url: str, tmp_path: Path) -> None:
    done = bench(
        engine_url,
        "--endpoint",
        "completions",
        "--tokenizer",
        "server",
        "--isl",
        "uniform:20,90",
        "--osl",
        "3",
        "--ignore-eos",
        "--concurrency",
        "4",
        "--requests",
        "12",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    requests = results(tmp_path)["requests"]
    assert len(requests) == 12 and all(r["error"] is None for r in requests)
    assert [r["prompt_tokens"] for r in requests] == [
        r["isl"] for r in requests
    ]  # exact, by the engine's count
    assert {r["completion_tokens"] for r in requests} == {3}  # ignore_eos + min_tokens: the full OSL


def test_chat_with_tenants_and_a_sweep_against_the_engine(engine_url: str, tmp_path: Path) -> None:
    done = bench(
        engine_url,
        "--preset",
        "short-in-short-out",
        "--length-scale",
        "0.1",
        "--ignore-eos",
        "--tenants",
        "2",
        "--prefix-tokens",
        "32",
        "--warmup",
        "2",
        "--requests",
        "6",
        "--sweep-concurrency",
        "1,3",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    body = results(tmp_path)
    assert body["settings"]["model"] == "tiny-random"  # found through GET /v1/models
    assert 1 <= len(body["sweep"]) <= 2 and body["summary"]["errors"] == {}
    measured = [r for r in body["requests"] if not r["warmup"]]
    assert {r["tenant"] for r in measured} <= {0, 1} and all(r["ttft_s"] > 0 for r in measured)
    # the chat template adds tokens, so the engine counts more than the prompt text alone
    assert all(r["prompt_tokens"] > r["isl"] for r in measured)
    # the engine reports prefix-cache hits (usage.prompt_tokens_details) and the bench keeps them
    assert all(isinstance(r["cached_tokens"], int) for r in measured)
    assert any(r["cached_tokens"] >= 16 for r in measured)  # a tenant's prefix seen before
