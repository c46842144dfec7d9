"""The runner over the paged cache computes what a plain dense forward computes."""
from __future__ import annotations

import pytest
import torch

from local_engine.batch import ScheduledBatch
from local_engine.model import top_indices
from local_engine.runner import RunnerError
from local_engine.sequence import SamplingParams, Sequence
from tests.unit.local_engine.helpers import (
    VOCAB,
    BlockPool,
    dense_logits,
    greedy,
    make_runner,
    step,
    tiny_config,
    tiny_model,
)


def _prompt(seed: int, n: int) -> list[int]:
    return torch.randint(3, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _dense_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(dense_logits(model, ids)[-1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("attention", ["fast", "reference"])
@pytest.mark.parametrize("config", [tiny_config(), tiny_config(attention_bias=True, tie_word_embeddings=False)],
                         ids=["tied", "qkv_bias_untied"])
def test_runner_greedy_equals_dense_forward(attention: str, config) -> None:
    model = tiny_model(config)
    runner, pool = make_runner(model, attention=attention), BlockPool(64)
    prompts = [_prompt(1, 7), _prompt(2, 13), _prompt(3, 2)]
    seqs = [Sequence(p, greedy()) for p in prompts]
    step(runner, pool, seqs, [s.num_tokens for s in seqs], is_prefill=True)
    for _ in range(5):
        step(runner, pool, seqs, [1] * len(seqs), is_prefill=False)
    for seq, prompt in zip(seqs, prompts):
        assert seq.completion_token_ids == _dense_greedy(model, prompt, 6)


def _mixed_step(runner, pool: BlockPool, decodes: list[Sequence], prefill: Sequence, n: int) -> None:
    """One mixed step: a token for each decode, then n prompt tokens of ``prefill`` (as the engine runs it)."""
    seqs, counts = [*decodes, prefill], [1] * len(decodes) + [n]
    for seq, c in zip(seqs, counts):
        pool.fill(seq, runner.block_size, seq.num_cached_tokens + c)
    out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=len(decodes)))
    for seq, c, token in zip(seqs, counts, out.token_ids):
        seq.num_cached_tokens += c
        if token is not None:
            seq.append_token(token)


def test_mixed_steps_match_the_dense_forward_and_keep_the_decode_mirror() -> None:
    model = tiny_model()
    runner, pool = make_runner(model, num_blocks=512), BlockPool(512)  # room for the mirror (half the pool)
    prompts = [_prompt(10 + i, 5 + i) for i in range(4)]
    streams = [Sequence(p, greedy()) for p in prompts]
    step(runner, pool, streams, [s.num_tokens for s in streams], is_prefill=True)
    step(runner, pool, streams, [1] * 4, is_prefill=False)  # four decodes: the mirrored bmm path
    long_prompt = _prompt(20, 17)
    long = Sequence(long_prompt, greedy())
    for n in (6, 6, 5):  # its prefill in three chunks, each beside the four decodes
        _mixed_step(runner, pool, streams, long, n)
        assert runner.mirror._snapshot is not None  # a prefill of another sequence keeps the mirror
    assert long.num_completion_tokens == 1
    for _ in range(2):
        step(runner, pool, [*streams, long], [1] * 5, is_prefill=False)
    for seq, prompt in zip([*streams, long], [*prompts, long_prompt]):
        assert seq.completion_token_ids == _dense_greedy(model, prompt, seq.num_completion_tokens)


def test_a_prefill_of_a_mirrored_sequence_drops_the_mirror() -> None:
    runner, pool = make_runner(tiny_model(), num_blocks=512), BlockPool(512)
    streams = [Sequence(_prompt(30 + i, 6), greedy()) for i in range(4)]
    step(runner, pool, streams, [6] * 4, is_prefill=True)
    step(runner, pool, streams, [1] * 4, is_prefill=False)
    assert runner.mirror._snapshot is not None
    again = streams[0]
    again.num_cached_tokens = 0  # recomputed (as after a preemption) under the same id
    step(runner, pool, [again], [again.num_tokens], is_prefill=True)
    assert runner.mirror._snapshot is None


def test_chunked_prefill_and_recompute_match_one_shot() -> None:
    model = tiny_model()
    runner, pool = make_runner(model), BlockPool(64)
    prompt = _prompt(4, 19)
    seq = Sequence(prompt, greedy())
    assert step(runner, pool, [seq], [8], is_prefill=True) == [None]  # partial prefill samples nothing
    assert step(runner, pool, [seq], [6], is_prefill=True) == [None]
    step(runner, pool, [seq], [5], is_prefill=True)
    step(runner, pool, [seq], [1], is_prefill=False)
    # after a preemption the engine recomputes prompt + generated tokens from scratch in new blocks
    again = Sequence(prompt, greedy())
    again.token_ids = list(seq.token_ids[:-1])
    step(runner, pool, [again], [again.num_tokens], is_prefill=True)
    assert again.token_ids == seq.token_ids
    assert seq.completion_token_ids == _dense_greedy(model, prompt, 2)


def test_logits_of_prefill_match_dense_at_every_chunk_end() -> None:
    model = tiny_model(seed=5)
    runner, pool = make_runner(model), BlockPool(64)
    prompt = _prompt(6, 12)
    seq = Sequence(prompt, SamplingParams(temperature=0.0, logprobs=3))
    pool.fill(seq, runner.block_size, 12)
    out = runner.run(ScheduledBatch((seq,), (12,)))
    expected = torch.log_softmax(dense_logits(model, prompt)[-1], -1)
    lp = out.logprobs[0]
    assert lp is not None and lp.token_id == int(expected.argmax())
    assert lp.logprob == pytest.approx(float(expected.max()), abs=1e-4)
    assert [t for t, _ in lp.top] == expected.topk(3).indices.tolist()


def test_batched_decode_equals_each_sequence_alone() -> None:
    model = tiny_model(seed=7)
    prompts = [_prompt(10 + i, 3 + 5 * i) for i in range(5)]
    alone = []
    for p in prompts:
        runner, pool = make_runner(model), BlockPool(64)
        seq = Sequence(p, greedy())
        step(runner, pool, [seq], [seq.num_tokens], True)
        for _ in range(6):
            step(runner, pool, [seq], [1], False)
        alone.append(seq.completion_token_ids)
    runner, pool = make_runner(model), BlockPool(64)
    seqs = [Sequence(p, greedy()) for p in prompts]
    step(runner, pool, seqs[:2], [s.num_tokens for s in seqs[:2]], True)
    step(runner, pool, seqs[:2], [1, 1], False)  # the others join later (in-flight batching)
    step(runner, pool, seqs[2:], [s.num_tokens for s in seqs[2:]], True)
    for _ in range(6):
        live = [s for s in seqs if s.num_completion_tokens < 7]
        step(runner, pool, live, [1] * len(live), False)
    assert [s.completion_token_ids for s in seqs] == alone


def test_runner_does_not_mutate_sequences() -> None:
    model = tiny_model()
    runner, pool = make_runner(model), BlockPool(64)
    seq = Sequence(_prompt(8, 5), greedy())
    pool.fill(seq, runner.block_size, 5)
    before = (list(seq.token_ids), seq.num_cached_tokens, list(seq.block_table), seq.status)
    out = runner.run(ScheduledBatch((seq,), (5,)))
    assert out.token_ids[0] is not None
    assert (seq.token_ids, seq.num_cached_tokens, seq.block_table, seq.status) == before


def test_too_short_block_table_is_an_error_not_a_crash() -> None:
    runner = make_runner(tiny_model())
    seq = Sequence(_prompt(9, 9), greedy())
    seq.block_table = [0]  # 4 slots for 9 tokens
    with pytest.raises(RunnerError, match="blocks hold"):
        runner.run(ScheduledBatch((seq,), (9,)))


def test_empty_batch_and_bf16_runner() -> None:
    model = tiny_model(dtype=torch.bfloat16)
    runner, pool = make_runner(model), BlockPool(64)
    assert runner.run(ScheduledBatch((), ())).token_ids == ()
    seq = Sequence(_prompt(11, 6), greedy())
    step(runner, pool, [seq], [6], True)
    assert 0 <= seq.token_ids[-1] < VOCAB
    assert runner.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2


def _generate(model, params: SamplingParams, n: int = 10, prompt_seed: int = 12) -> list[int]:
    runner, pool = make_runner(model), BlockPool(64)
    seq = Sequence(_prompt(prompt_seed, 6), params)
    step(runner, pool, [seq], [6], True)
    for _ in range(n - 1):
        step(runner, pool, [seq], [1], False)
    return seq.completion_token_ids


def test_seeded_sampling_through_the_runner_is_reproducible() -> None:
    model = tiny_model(seed=3)
    a = _generate(model, SamplingParams(temperature=1.0, seed=5))
    assert a == _generate(model, SamplingParams(temperature=1.0, seed=5))
    assert a != _generate(model, SamplingParams(temperature=1.0, seed=6))


def test_penalties_reach_the_sampler_through_the_runner() -> None:
    model = tiny_model(seed=4)  # a seed whose greedy output loops on one token
    plain = _generate(model, greedy(), n=16)
    penalised = _generate(model, SamplingParams(temperature=0.0, presence_penalty=2.0, frequency_penalty=2.0), n=16)
    assert plain[:3] == [plain[0]] * 3  # the random model repeats itself...
    assert len(set(penalised)) == 16  # ...and not at all when repeats are penalised


def test_prepacked_bf16_weights_compute_the_same_logits() -> None:
    model = tiny_model(seed=9, dtype=torch.bfloat16)
    ids = _prompt(13, 9)
    plain = dense_logits(model, ids)
    if not model.prepack_weights():
        pytest.skip("this CPU has no native bf16: weights are not pre-packed")
    assert model.packed_head is not None and model.layers[0].packed
    torch.testing.assert_close(dense_logits(model, ids), plain, atol=0, rtol=0)
    model.to(torch.float32)  # moving or casting drops the packed copies
    assert model.packed_head is None and not model.layers[0].packed


def test_decode_mirror_matches_the_reference_across_joins_leaves_and_growth() -> None:
    model = tiny_model(seed=11)
    runs = {}
    for attention in ("fast", "reference"):
        runner, pool = make_runner(model, attention=attention, num_blocks=1024), BlockPool(1024)
        seqs = [Sequence(_prompt(20 + i, 3 + 4 * i), greedy()) for i in range(6)]
        step(runner, pool, seqs[:4], [s.num_tokens for s in seqs[:4]], True)
        for _ in range(70):  # past the mirror's 64-token headroom: it must grow
            step(runner, pool, seqs[:4], [1] * 4, False)
        if attention == "fast":
            assert runner.mirror.buffers[0] is not None  # the decode steps really used the mirror
        step(runner, pool, seqs[4:], [s.num_tokens for s in seqs[4:]], True)  # two join
        for _ in range(5):
            step(runner, pool, seqs, [1] * 6, False)
        del seqs[1]  # one leaves
        for _ in range(5):
            step(runner, pool, seqs, [1] * 5, False)
        runs[attention] = [s.completion_token_ids for s in seqs]
    assert runs["fast"] == runs["reference"]


def test_two_stage_top_indices_equal_topk() -> None:
    logits = torch.randn(16, 49152, generator=torch.Generator().manual_seed(1)) * 5
    logits[0, :128] += 100  # every top candidate in one chunk
    for k in (1, 16):
        assert torch.equal(top_indices(logits, k).sort(dim=-1).values,
                           logits.topk(k, dim=-1).indices.sort(dim=-1).values)
    small = torch.randn(2, 300)  # vocabulary not a whole number of chunks
    assert torch.equal(top_indices(small, 16).sort(dim=-1).values, small.topk(16, dim=-1).indices.sort(dim=-1).values)
