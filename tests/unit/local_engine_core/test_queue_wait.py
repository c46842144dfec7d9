"""How a request waited in the engine's queue (its span's attributes): requests ahead when the step loop
took it in, steps that ran before its first, and those of them that took no waiting request in."""
from __future__ import annotations

import pytest

from local_engine.config import EngineConfig
from local_engine.engine_build import build_engine
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.queue_wait import QueueWait
from local_engine.sequence import SamplingParams, Sequence
from local_engine.trace_context import parse_traceparent
from local_engine.tracing import RequestTimes, RequestTracer
from observability.tracing import TracingConfig, build_tracing


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_engine_model("tiny-random")


def _first_outputs(loaded: LoadedModel, num_requests: int, max_tokens: int, prompt: str = "request number",
                   **config: object) -> dict[int, QueueWait]:
    engine = build_engine(EngineConfig(model="tiny-random", **config), loaded)  # type: ignore[arg-type]
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    seqs = [Sequence(loaded.tokenizer.encode(f"{prompt} {i}"), sampling) for i in range(num_requests)]
    for seq in seqs:
        engine.add_request(seq)
    index = {seq.seq_id: i for i, seq in enumerate(seqs)}
    waits: dict[int, QueueWait] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.num_completion_tokens == 1:
                assert out.queue_wait is not None
                waits[index[out.seq_id]] = out.queue_wait
            else:
                assert out.queue_wait is None  # only the first output carries it
    return waits


def test_one_slot_counts_the_steps_each_request_waited_and_those_that_took_nobody_in(loaded: LoadedModel) -> None:
    # One sequence at a time, 3 tokens each: A runs steps 1-3, B 4-6, C 7-9. B waited through steps 1-3,
    # of which 2 and 3 took nobody in (step 1 took A); C through 1-6, of which all but 1 and 4.
    waits = _first_outputs(loaded, 3, 3, max_num_seqs=1)
    assert [(w.ahead, w.steps, w.steps_no_admit, w.prefill_steps) for w in (waits[0], waits[1], waits[2])] == [
        (0, 0, 0, 1), (1, 3, 2, 1), (2, 6, 4, 1)]
    assert waits[0].taken_in_ns <= waits[1].taken_in_ns <= waits[2].taken_in_ns
    assert all(w.taken_in_ns < w.sampled_ns for w in waits.values())
    assert waits[0].sampled_ns < waits[1].sampled_ns < waits[2].sampled_ns


def test_a_prompt_chunked_over_steps_counts_them(loaded: LoadedModel) -> None:
    # 16 tokens a step, idle or not: a prompt of 40-odd tokens takes 3 steps before its first token.
    prompt = " ".join(["word"] * 40)
    n = len(loaded.tokenizer.encode(f"{prompt} 0"))
    waits = _first_outputs(loaded, 1, 2, prompt, max_num_seqs=4, max_num_batched_tokens=16, max_idle_batched_tokens=16)
    assert waits[0].prefill_steps == -(-n // 16) and waits[0].steps == 0
    assert (waits[0].first_step_decodes, waits[0].first_step_prompt_tokens) == (0, 16)


def test_the_first_step_says_what_ran_beside_it(loaded: LoadedModel) -> None:
    engine = build_engine(EngineConfig(model="tiny-random"), loaded)
    sampling = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    a, b = (Sequence(loaded.tokenizer.encode(text), sampling) for text in ("first request", "the second one, later"))
    engine.add_request(a)
    engine.step()  # a's prompt: it decodes from now on
    engine.add_request(b)
    (first_b,) = [out for out in engine.step() if out.seq_id == b.seq_id]
    assert first_b.queue_wait is not None
    assert (first_b.queue_wait.first_step_decodes, first_b.queue_wait.first_step_prompt_tokens) == (1, b.num_prompt_tokens)
    assert a.queue_wait is not None and (a.queue_wait.first_step_decodes, a.queue_wait.first_step_prompt_tokens) == (
        0, a.num_prompt_tokens)


def test_a_burst_that_fits_one_step_waits_no_step(loaded: LoadedModel) -> None:
    waits = _first_outputs(loaded, 4, 2)
    assert [(waits[i].ahead, waits[i].steps, waits[i].steps_no_admit, waits[i].prefill_steps) for i in range(4)] == [
        (0, 0, 0, 1), (1, 0, 0, 1), (2, 0, 0, 1), (3, 0, 0, 1)]


def test_the_engine_span_carries_the_queue_wait() -> None:
    tracing = build_tracing(TracingConfig(exporter="memory"))
    tracer = RequestTracer(tracing.provider.get_tracer("engine"), "tiny")
    parent = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    t0 = 1_800_000_000_000_000_000
    tracer.record(parent, RequestTimes(t0, t0 + 50, t0 + 90, t0 + 200, 12, 4, queue_wait=QueueWait(t0 + 20, 3, 2, 1, 2, t0 + 80, 5, 96)))
    tracer.record(parent, RequestTimes(t0, 0, 0, t0 + 10, 12, 0, aborted=True))  # never taken in: no attributes
    engine = [s for s in tracing.memory.get_finished_spans() if s.name == "engine tiny"]  # type: ignore[union-attr]
    assert [{k: v for k, v in s.attributes.items() if k.startswith("hybridgw.engine.queue.")} for s in engine] == [
        {"hybridgw.engine.queue.taken_in_ns": t0 + 20, "hybridgw.engine.queue.ahead": 3,
         "hybridgw.engine.queue.steps": 2, "hybridgw.engine.queue.steps_no_admit": 1}, {}]
    assert [{k: v for k, v in s.attributes.items() if k.startswith("hybridgw.engine.prefill.")} for s in engine] == [
        {"hybridgw.engine.prefill.steps": 2, "hybridgw.engine.prefill.sampled_ns": t0 + 80,
         "hybridgw.engine.prefill.first_step_decodes": 5, "hybridgw.engine.prefill.first_step_prompt_tokens": 96}, {}]
