"""What the engine reports about itself: every accepted request counts as waiting (also those the
step loop has not taken in yet), and its TTFT is stamped at the first token shown as content."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.engine.conftest import Engine, engine_process, metric_value
from tests.integration.engine.test_core_process import children
from tests.support import procs
from tests.support.otlp_sink import TraceSink

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


def _spans_of(sink: TraceSink, trace_id: str) -> dict[str, dict[str, Any]]:
    def found() -> dict[str, dict[str, Any]] | None:
        spans = {s["name"]: s for s in sink.snapshot() if s["trace_id"] == trace_id}
        return spans if "engine.decode" in spans and "engine.prefill" in spans else None

    return procs.wait_until(found, "the engine's spans of one request", 30)


def test_engine_spans_end_prefill_at_the_first_content() -> None:
    sink = TraceSink().start()
    env = {"HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    try:
        with engine_process("--model", MODEL, env=env) as engine:
            client = engine.client()
            for trace_id, stop in (("1" * 32, ["\x00" * 400]), ("2" * 32, None)):
                stream = client.chat.completions.create(
                    model=MODEL, messages=HI, max_tokens=24, stream=True, stop=stop,
                    extra_body={"ignore_eos": True}, extra_headers={"traceparent": f"00-{trace_id}-{'3' * 16}-01"})
                assert sum(1 for _ in stream) > 1
            held, plain = _spans_of(sink, "1" * 32), _spans_of(sink, "2" * 32)
    finally:
        sink.stop()
    # Everything held back to the end: the first content is the last output, so decode is empty.
    assert held["engine.prefill"]["end_ns"] == held["engine.decode"]["start_ns"] == held["engine.decode"]["end_ns"]
    assert plain["engine.decode"]["start_ns"] < plain["engine.decode"]["end_ns"]  # 23 more tokens after the first
