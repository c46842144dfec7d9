"""Decode steps of any number of sequences on the native kernels skip the attention metadata (runner._native_decode)
and return the same tokens and logprobs, bit for bit, as the path through ``_prepare``."""
from __future__ import annotations

import pytest

import local_engine.runner as runner_module
from local_engine.batch import ScheduledBatch
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence

from .helpers import BlockPool
from .native_support import native_kernels
from .test_native_model import PROMPTS, coded_runner


def decode(runner: ModelRunner, prompts: list[list[int]], new_tokens: int = 10) -> list[list[tuple]]:
    """Greedy with top-5 logprobs: each sequence's (token, logprob, top) per step, prefill then decodes."""
    pool = BlockPool(runner.num_blocks)
    seqs = [Sequence(list(p), SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True, logprobs=5))
            for p in prompts]
    picks: list[list[tuple]] = [[] for _ in seqs]
    counts = [len(p) for p in prompts]
    for i in range(new_tokens):
        for seq, n in zip(seqs, counts):
            pool.fill(seq, runner.block_size, seq.num_cached_tokens + n)
        out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if i == 0 else len(seqs)))
        for j, (seq, n, token, lp) in enumerate(zip(seqs, counts, out.token_ids, out.logprobs)):
            assert token is not None and lp is not None
            seq.num_cached_tokens += n
            seq.append_token(token)
            picks[j].append((token, lp.logprob, lp.top))
        counts = [1] * len(seqs)
    return picks


@pytest.mark.parametrize("batch", [1, 3, 6])
def test_native_decode_steps_build_no_metadata_and_pick_the_same_bits(monkeypatch: pytest.MonkeyPatch,
                                                                       batch: int) -> None:
    native_kernels()  # skips where the library cannot exist
    runner = coded_runner(monkeypatch, "auto")
    prompts = PROMPTS[:batch]
    built: list[int] = []
    real = runner_module.build_attention_metadata

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        built.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "build_attention_metadata", counted)
    lean = decode(runner, prompts)
    assert built == [batch]  # the prefill only: its 9 decode steps built none
    monkeypatch.setattr(runner, "_native_decode", lambda batch: None)  # the path through _prepare
    full = decode(runner, prompts)
    assert len(built) == 1 + 10
    assert lean == full


def test_decode_steps_past_the_cap_still_build_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    runner = coded_runner(monkeypatch, "auto")
    runner.native_decode_max_seqs = 3  # the earlier limit (the A/B bench's side A)
    built: list[int] = []
    real = runner_module.build_attention_metadata
    monkeypatch.setattr(runner_module, "build_attention_metadata",
                        lambda *a, **k: built.append(len(a[0])) or real(*a, **k))
    decode(runner, PROMPTS[:4], new_tokens=3)  # 4 sequences: the bmm path with its decode mirror
    assert built == [4, 4, 4]
