"""What the engine reports about itself: every accepted request counts as waiting (also those the
step loop has not taken in yet), and its TTFT is stamped at the first token shown as content."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import openai
import pytest

from tests.integration.engine.conftest import Engine, engine_process, metric_value
from tests.integration.engine.test_core_process import children

MODEL = "tiny-random"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def one_slot() -> Iterator[Engine]:
    with engine_process("--model", MODEL, "--max-num-seqs", "1", "--max-waiting", "2") as engine:
        yield engine


def test_requests_the_step_loop_has_not_taken_in_count_as_waiting(one_slot: Engine) -> None:
    (core,) = children(one_slot.proc.pid)
    client = one_slot.client()
    os.kill(core, signal.SIGSTOP)  # the server accepts requests; the step loop cannot take them in
    try:
        streams = [client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4, stream=True)
                   for _ in range(2)]  # each returns once the server has accepted its request
        state = one_slot.state()
        assert (state["num_waiting"], state["num_running"]) == (2, 0), state
        assert metric_value(one_slot.metrics(), "hybridgw_engine_num_requests_waiting") == 2.0
        # The engine's admission sees the same queue: a third request is refused, not queued.
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4)
        assert refused.value.status_code == 503
    finally:
        os.kill(core, signal.SIGCONT)
    for stream in streams:
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    one_slot.wait_for(lambda s: s["num_waiting"] == 0 and s["num_running"] == 0)


def _sums(engine: Engine) -> tuple[float, float, float]:
    text = engine.metrics()
    return (metric_value(text, "gen_ai_server_time_to_first_token_seconds_sum"),
            metric_value(text, "gen_ai_server_request_duration_seconds_sum"),
            metric_value(text, "gen_ai_server_time_to_first_token_seconds_count"))


def test_ttft_is_stamped_at_the_first_content_not_the_first_sampled_token(one_slot: Engine) -> None:
    # A long stop string holds back everything generated (it might be the stop string's start),
    # so the only content is the last output: TTFT must equal the whole request's duration.
    ttft0, e2e0, count0 = _sums(one_slot)
    stream = one_slot.client().chat.completions.create(
        model=MODEL, messages=HI, max_tokens=24, stream=True, stop=["\x00" * 400],
        extra_body={"ignore_eos": True})
    chunks = [c for c in stream if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices[0].delta.content]
    assert len(content) == 1  # everything arrived at the end
    ttft1, e2e1, count1 = _sums(one_slot)
    assert count1 == count0 + 1
    assert ttft1 - ttft0 == pytest.approx(e2e1 - e2e0, abs=1e-6)
