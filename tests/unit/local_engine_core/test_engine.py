"""The engine loop on the tiny random-weight model: batching, preemption, chunking, caching, stops, abort."""
from __future__ import annotations

import pytest
import torch

from local_engine.config import EngineConfig
from local_engine.engine import LLMEngine
from local_engine.engine_build import build_engine
from local_engine.errors import RequestTooLarge
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.runner import ModelRunner
from local_engine.sequence import FinishReason, SamplingParams, Sequence
from local_engine.tokenizer import IncrementalDetokenizer

PROMPTS = ["Hello there", "The capital of France is", "one two three four five six seven eight nine ten",
           "Write a poem about the sea and the sky and the long road home"]


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    return load_engine_model("tiny-random")


def engine_with(loaded: LoadedModel, num_blocks: int | None = None, **kw: object) -> LLMEngine:
    config = EngineConfig(model="tiny-random", **kw)  # type: ignore[arg-type]
    if num_blocks is None:
        return build_engine(config, loaded)
    runner = ModelRunner(loaded.runner.model, loaded.model_config, device="cpu", dtype=torch.float32,
                         kv_dtype=None, num_blocks=num_blocks, block_size=config.block_size)
    tok = loaded.tokenizer
    return LLMEngine(runner, config, eos_token_ids=tuple(tok.eos_token_ids),
                     detokenizer_factory=lambda: IncrementalDetokenizer(tok), max_model_len=loaded.max_model_len)


def run_all(engine: LLMEngine, seqs: list[Sequence]) -> dict[int, tuple[list[int], str, FinishReason | None]]:
    for seq in seqs:
        engine.add_request(seq)
    texts = {s.seq_id: "" for s in seqs}
    ids: dict[int, list[int]] = {s.seq_id: [] for s in seqs}
    reasons: dict[int, FinishReason | None] = {}
    while engine.has_unfinished():
        for out in engine.step():
            texts[out.seq_id] += out.new_text
            ids[out.seq_id].extend(out.new_token_ids)
            if out.finish_reason is not None:
                reasons[out.seq_id] = out.finish_reason
    return {s.seq_id: (ids[s.seq_id], texts[s.seq_id], reasons.get(s.seq_id)) for s in seqs}


def greedy(loaded: LoadedModel, prompt: str, max_tokens: int = 12, **kw: object) -> Sequence:
    return Sequence(loaded.tokenizer.encode(prompt), SamplingParams(max_tokens=max_tokens, temperature=0.0, **kw))


def alone(loaded: LoadedModel, prompt: str, max_tokens: int = 12) -> tuple[list[int], str]:
    seq = greedy(loaded, prompt, max_tokens)
    ids, text, _ = run_all(engine_with(loaded), [seq])[seq.seq_id]
    return ids, text


@pytest.fixture(scope="module")
def solo(loaded: LoadedModel) -> dict[str, tuple[list[int], str]]:
    return {p: alone(loaded, p) for p in PROMPTS}


def test_batched_greedy_equals_each_request_alone(loaded: LoadedModel, solo: dict) -> None:
    engine = engine_with(loaded)
    seqs = [greedy(loaded, p) for p in PROMPTS]
    results = run_all(engine, seqs)
    for p, seq in zip(PROMPTS, seqs):
        ids, text, reason = results[seq.seq_id]
        assert (ids, text) == solo[p]
        assert reason is FinishReason.LENGTH and len(ids) == 12
    assert len({tuple(solo[p][0]) for p in PROMPTS}) == len(PROMPTS)  # the model does tell prompts apart
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_total_blocks


def test_tiny_pool_preempts_and_every_request_still_matches(loaded: LoadedModel, solo: dict) -> None:
    engine = engine_with(loaded, num_blocks=4, enable_prefix_caching=False)
    seqs = [greedy(loaded, p) for p in PROMPTS]
    results = run_all(engine, seqs)
    assert engine.scheduler.num_preemptions > 0
    for p, seq in zip(PROMPTS, seqs):
        assert results[seq.seq_id][:2] == solo[p]
    assert engine.block_manager.num_free_blocks == 4


def test_chunked_prefill_gives_the_same_tokens(loaded: LoadedModel, solo: dict) -> None:
    engine = engine_with(loaded, max_num_batched_tokens=4, max_idle_batched_tokens=4, max_num_seqs=4)
    seqs = [greedy(loaded, p) for p in PROMPTS]
    results = run_all(engine, seqs)
    for p, seq in zip(PROMPTS, seqs):
        assert results[seq.seq_id][:2] == solo[p]


def test_a_long_prompt_arriving_does_not_stall_running_streams_nor_change_outputs(
        loaded: LoadedModel, solo: dict) -> None:
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)
    expected_long = alone(loaded, long_prompt)
    engine = engine_with(loaded, max_num_batched_tokens=16, max_num_seqs=8)
    streams = [greedy(loaded, p) for p in PROMPTS]
    for seq in streams:
        engine.add_request(seq)
    results = {s.seq_id: ([], "") for s in [*streams]}
    for _ in range(3):  # the streams are decoding
        for out in engine.step():
            ids, text = results[out.seq_id]
            results[out.seq_id] = (ids + list(out.new_token_ids), text + out.new_text)
    long = greedy(loaded, long_prompt)
    assert long.num_prompt_tokens > 3 * 16
    engine.add_request(long)
    results[long.seq_id] = ([], "")
    prefill_steps = 0
    while engine.has_unfinished():
        before = long.num_cached_tokens
        outs = engine.step()
        if before < long.num_prompt_tokens - 1 and any(not s.is_finished for s in streams):
            prefill_steps += 1  # every step of the long prefill also gives each live stream a token
            assert {o.seq_id for o in outs} >= {s.seq_id for s in streams if s.num_completion_tokens < 12}
        for out in outs:
            ids, text = results[out.seq_id]
            results[out.seq_id] = (ids + list(out.new_token_ids), text + out.new_text)
    assert prefill_steps >= 3
    for p, seq in zip(PROMPTS, streams):
        assert results[seq.seq_id] == solo[p]
    assert results[long.seq_id] == expected_long


def test_prefix_cache_hits_and_keeps_the_output(loaded: LoadedModel) -> None:
    long_prompt = " ".join(["the quick brown fox jumps over the lazy dog"] * 6)
    expected = alone(loaded, long_prompt)
    engine = engine_with(loaded, block_size=16)
    first = greedy(loaded, long_prompt)
    run_all(engine, [first])
    second = greedy(loaded, long_prompt)
    ids, text, _ = run_all(engine, [second])[second.seq_id]
    assert (ids, text) == expected
    assert engine.block_manager.num_hit_tokens >= 16
    assert engine.block_manager.prefix_cache_hit_rate > 0


def test_stop_token_ids_and_stop_strings(loaded: LoadedModel, solo: dict) -> None:
    prompt = PROMPTS[1]
    ids, text = solo[prompt]
    engine = engine_with(loaded)
    by_id = greedy(loaded, prompt, stop_token_ids=(ids[3],))
    out_ids, _, reason = run_all(engine, [by_id])[by_id.seq_id]
    assert reason is FinishReason.STOP and out_ids == ids[:4]
    stop = text[len(text) // 2:len(text) // 2 + 3]
    by_text = greedy(loaded, prompt, stop=(stop,))
    _, out_text, reason = run_all(engine, [by_text])[by_text.seq_id]
    assert reason is FinishReason.STOP and out_text == text[:text.index(stop)]


def test_abort_frees_blocks_at_once(loaded: LoadedModel) -> None:
    engine = engine_with(loaded)
    seqs = [greedy(loaded, p, max_tokens=50) for p in PROMPTS]
    for seq in seqs:
        engine.add_request(seq)
    engine.step()
    engine.step()
    assert engine.block_manager.num_free_blocks < engine.block_manager.num_total_blocks
    for seq in seqs:
        assert engine.abort(seq.seq_id)
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_total_blocks
    assert not engine.has_unfinished() and engine.step() == []
    assert not engine.abort(seqs[0].seq_id)


def test_requests_that_can_never_fit_are_refused_with_numbers(loaded: LoadedModel) -> None:
    engine = engine_with(loaded, num_blocks=4)  # 64 token slots
    with pytest.raises(RequestTooLarge) as err:
        engine.check_fits(10, loaded.max_model_len)
    assert err.value.max_model_len == loaded.max_model_len and err.value.num_prompt_tokens == 10
    with pytest.raises(RequestTooLarge) as err:
        engine.add_request(Sequence(list(range(1, 41)), SamplingParams(max_tokens=30)))
    assert err.value.num_blocks_needed == 5 and err.value.num_blocks_total == 4
    assert "5 KV blocks" in str(err.value)
    engine.check_fits(40, 25)  # 64 tokens computed at most: fits exactly


def test_snapshot_counts_every_step_with_its_wall_and_cpu_seconds(loaded: LoadedModel) -> None:
    engine = engine_with(loaded)
    assert (engine.snapshot().num_steps_total, engine.snapshot().step_seconds_total) == (0, 0.0)
    engine.add_request(greedy(loaded, PROMPTS[0], max_tokens=5))
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
    snap = engine.snapshot()
    assert snap.num_steps_total == steps == 5  # one prefill (it samples the first token), then four decodes
    assert snap.step_seconds_total > 0 and snap.step_cpu_seconds_total > 0
