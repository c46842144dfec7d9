"""`hybridgw engine --kv-dtype fp8` as a real process: the pool holds a quarter of fp32's bytes per token
(and so four times the blocks), and the openai SDK gets the tokens it asked for, with text."""
from __future__ import annotations

from tests.integration.engine.conftest import engine_process

MODEL = "tiny-random"


def test_an_fp8_engine_serves_from_a_quarter_size_pool() -> None:
    with engine_process("--model", MODEL, "--kv-dtype", "fp8", "--no-cuda-graphs") as engine:
        resp = engine.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "The capital of France is"}], max_tokens=8,
            temperature=0, extra_body={"ignore_eos": True})
        assert resp.usage is not None and resp.usage.completion_tokens == 8
        assert resp.choices[0].message.content and resp.choices[0].finish_reason == "length"
        state = engine.state()
    assert state["kv_dtype"] == "float8_e4m3fn" and state["healthy"] is True
    assert state["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 1  # layers x kv heads x head dim x 1 byte
    assert state["num_blocks_total"] == 4 * 4096  # the same 32 MiB as fp32's 4096 blocks
