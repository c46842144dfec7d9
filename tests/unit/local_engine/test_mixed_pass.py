"""A mixed step (running decodes beside a prompt chunk) is one forward pass, and its decode tokens and the
prompt's first token are those of the same rows computed apart (the decodes' pass, then the chunk's)."""
from __future__ import annotations

import pytest
import torch

from local_engine.batch import ScheduledBatch
from local_engine.native.paged_decode import NativeDecodeAttention
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence

from .helpers import VOCAB, BlockPool, make_runner, step, tiny_model
from .native_support import native_kernels
from .test_native_model import coded_runner, near_ties

CHUNKS = (13, 13, 14)  # the long prompt's prefill, each chunk beside every stream's decode
Token = tuple[int, float, dict[int, float]]  # (token id, its logprob, top-5 {token: logprob})


def _prompt(seed: int, n: int) -> list[int]:
    return torch.randint(3, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _mixed_run(runner: ModelRunner, num_streams: int, forced: list[list[int]] | None = None) -> list[list[Token]]:
    """Streams prefilled and decoding, then a 40-token prompt in three mixed steps and one more step
    of all; per sequence (streams, then the prompt) each sampled token, fed ``forced`` ones when given."""
    pool = BlockPool(runner.num_blocks)
    params = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True, logprobs=5)
    streams = [Sequence(_prompt(10 + i, 5 + 3 * i), params) for i in range(num_streams)]
    step(runner, pool, streams, [s.num_tokens for s in streams], is_prefill=True)
    step(runner, pool, streams, [1] * num_streams, is_prefill=False)
    long = Sequence(_prompt(20, sum(CHUNKS)), params)
    seqs = [*streams, long]
    got: list[list[Token]] = [[] for _ in seqs]
    for n in (*CHUNKS, 1):
        counts = [1] * num_streams + [n]
        for seq, c in zip(seqs, counts):
            pool.fill(seq, runner.block_size, seq.num_cached_tokens + c)
        out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=num_streams + (n == 1)))
        for i, (seq, c, token, lp) in enumerate(zip(seqs, counts, out.token_ids, out.logprobs)):
            seq.num_cached_tokens += c
            if token is not None:
                assert lp is not None
                got[i].append((token, lp.logprob, dict(lp.top)))
                seq.append_token(forced[i][len(got[i]) - 1] if forced else token)
    return got


def count_kernel_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The rows of each native decode-attention call from now on (the kernel still runs)."""
    calls: list[int] = []
    kernel_call = NativeDecodeAttention.__call__

    def counted(self: NativeDecodeAttention, layer: int, *qkv: torch.Tensor) -> torch.Tensor:
        calls.append(qkv[0].shape[0])
        return kernel_call(self, layer, *qkv)

    monkeypatch.setattr(NativeDecodeAttention, "__call__", counted)
    return calls


def _runner(split: bool, attention: str = "fast") -> ModelRunner:
    runner = make_runner(tiny_model(), num_blocks=512, attention=attention)  # float32: room for the mirror
    runner.split_mixed = split
    return runner


@pytest.mark.parametrize(("attention", "num_streams"), [("fast", 2), ("fast", 4), ("reference", 3), ("deterministic", 4)],
                         ids=["padded_groups", "decode_mirror", "reference", "deterministic"])
def test_a_mixed_step_is_one_pass_and_gives_the_tokens_computed_apart(attention: str, num_streams: int) -> None:
    one, apart = _runner(False, attention), _runner(True, attention)
    passes: list[int] = []
    one.model.register_forward_hook(lambda *_: passes.append(1))
    got, expected = _mixed_run(one, num_streams), _mixed_run(apart, num_streams)
    assert len(passes) == 2 + len(CHUNKS) + 1  # prefill, decode, three mixed steps, the last decode
    assert [len(t) for t in got] == [len(CHUNKS) + 1] * num_streams + [2]  # the prompt's first token too
    assert [[t for t, _, _ in ts] for ts in got] == [[t for t, _, _ in ts] for ts in expected]
    if attention == "deterministic":  # batch-invariant: the same bits however the rows were batched
        assert got == expected
    else:  # float32 matmuls of more rows may sum in another order: the last bits only
        for ts, es in zip(got, expected):
            assert [lp for _, lp, _ in ts] == pytest.approx([lp for _, lp, _ in es], abs=1e-5)
    if num_streams == 4 and attention == "fast":  # the mirror followed the decodes through the mixed steps
        assert one.mirror._snapshot is not None


def test_mixed_steps_keep_the_native_decode_kernel_and_its_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two decodes beside a chunk: the native kernel attends them in place inside the one pass; bf16
    matmuls of more rows than the small path's may flip a pick only at a near-tie."""
    native_kernels()
    one, apart = coded_runner(monkeypatch, "auto"), coded_runner(monkeypatch, "auto")
    apart.split_mixed = True
    calls = count_kernel_rows(monkeypatch)
    got = _mixed_run(one, 2)
    layers = one.model_config.num_layers
    assert calls == [2] * len(CHUNKS) * layers  # each mixed step, 2 rows (pure decode steps: one call a layer)
    picks = [[t for t, _, _ in ts] for ts in got]
    expected = _mixed_run(apart, 2, forced=picks)  # the rows apart, fed the same tokens
    assert sum(near_ties(p, [top for _, _, top in es]) for p, es in zip(picks, expected)) <= 2
