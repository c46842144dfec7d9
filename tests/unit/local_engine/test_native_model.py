"""The native kernels inside the model: small steps take the fused layer, the outputs agree with the
torch path, --deterministic stays batch-invariant on them, and without the library the torch path runs."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from local_engine.batch import ScheduledBatch
from local_engine.loaders.gguf_quants import int8_as_int4_halves
from local_engine.loading import load_engine_model
from local_engine.model import LlamaModel
from local_engine.native.paged_decode import NativeDecodeAttention, native_decode_attention
from local_engine.runner import ModelRunner
from local_engine.sequence import SamplingParams, Sequence

from .helpers import BlockPool, dense_attention, make_runner, step, tiny_model
from .native_support import codes, native_kernels
from .test_gguf import Q, _write_tiny_gguf

MATRICES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
PROMPTS = [[5, 9, 200, 31, 77, 12, 400, 3, 18], [7, 7, 64], [300, 2, 45, 45, 101, 6, 250, 17, 88, 9, 11, 120],
           [1, 2, 3, 4, 5], [480, 33], [99, 98, 97, 96, 95, 94, 93]]


def coded_model() -> LlamaModel:
    """The tiny model in bf16 with 4-bit codes for every matrix and a Q8_0 embedding, tied as the head
    (two 4-bit halves), as SmolLM2's GGUF has them."""
    model = tiny_model(dtype=torch.bfloat16)
    for layer in model.decoder_layers:
        for i, name in enumerate(MATRICES):
            n, k = getattr(layer, name).weight.shape
            layer.int4_codes[name] = codes(n, k, seed=10 * layer.layer_idx + i, step=0.07)
    rng = np.random.default_rng(0)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    q8 = rng.integers(-128, 128, size=(vocab, hidden), dtype=np.int8)
    scale = (rng.random((vocab, hidden // 32), dtype=np.float32) * 0.01).astype(np.float32)
    model.head_int4_codes = tuple(torch.from_numpy(a) for a in int8_as_int4_halves(q8, scale))
    dequantised = torch.from_numpy(q8).float() * torch.from_numpy(scale).to(torch.bfloat16).float().repeat_interleave(32, 1)
    model.embed_tokens.weight.data = dequantised.to(torch.bfloat16)
    return model


def coded_runner(monkeypatch: pytest.MonkeyPatch, native: str, attention: str = "fast",
                 activations: str = "bf16") -> ModelRunner:
    monkeypatch.setenv("HYBRIDGW_NATIVE", native)
    monkeypatch.setenv("HYBRIDGW_ACTIVATIONS", activations)
    runner = make_runner(coded_model(), num_blocks=128, block_size=4, attention=attention)
    monkeypatch.delenv("HYBRIDGW_NATIVE")
    monkeypatch.delenv("HYBRIDGW_ACTIVATIONS")
    return runner


def forced(runner: ModelRunner, prompts: list[list[int]], tokens: list[list[int]]) -> list[list[dict[int, float]]]:
    """Each step's top-3 {token: logprob} of each sequence, fed ``tokens`` instead of its own picks."""
    pool = BlockPool(runner.num_blocks)
    seqs = [Sequence(list(p), SamplingParams(max_tokens=len(t), temperature=0.0, ignore_eos=True, logprobs=3))
            for p, t in zip(prompts, tokens)]
    tops: list[list[dict[int, float]]] = [[] for _ in seqs]
    counts = [len(p) for p in prompts]
    for i in range(len(tokens[0])):
        for seq, n in zip(seqs, counts):
            pool.fill(seq, runner.block_size, seq.num_cached_tokens + n)
        out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if i == 0 else len(seqs)))
        for j, (seq, n, lp) in enumerate(zip(seqs, counts, out.logprobs)):
            assert lp is not None
            seq.num_cached_tokens += n
            seq.append_token(tokens[j][i])
            tops[j].append(dict(lp.top))
        counts = [1] * len(seqs)
    return tops


def near_ties(tokens: list[int], tops: list[dict[int, float]]) -> int:
    """Steps where ``tokens`` differ from the other path's greedy pick; fails unless each is a near-tie
    there (in its top 3, within 0.02 of the best logprob: bf16 rounding noise of these logits)."""
    differ = 0
    for token, top in zip(tokens, tops):
        best = max(top, key=top.__getitem__)
        if token != best:
            assert token in top and top[token] >= top[best] - 0.02, (token, top)
            differ += 1
    return differ


def generate(runner: ModelRunner, prompts: list[list[int]], new_tokens: int = 12) -> list[list[int]]:
    """Greedy, all prompts as one batch (prefill, then decode steps of len(prompts) rows)."""
    pool = BlockPool(runner.num_blocks)
    seqs = [Sequence(list(p), SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True))
            for p in prompts]
    step(runner, pool, seqs, [len(p) for p in prompts], True)
    for _ in range(new_tokens - 1):
        step(runner, pool, seqs, [1] * len(seqs), False)
    return [s.completion_token_ids for s in seqs]


def test_small_steps_take_the_fused_layer_and_agree_with_the_torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()  # skips where the library cannot exist
    fast, torch_path = coded_runner(monkeypatch, "auto"), coded_runner(monkeypatch, "off")
    assert fast.model.native is not None and all(layer.fused is not None for layer in fast.model.decoder_layers)
    assert torch_path.model.native is None and all(layer.fused is None for layer in torch_path.model.decoder_layers)
    # batch 1: decode steps through the fused layer and the native head; the same effective weights and
    # roundings as torch's int4 kernel, only float32 summation orders differ: greedy picks agree except
    # at near-ties, each one checked
    alone = [generate(fast, [p])[0] for p in PROMPTS]
    assert sum(near_ties(t, forced(torch_path, [p], [t])[0]) for p, t in zip(PROMPTS, alone)) <= 2


def switched_picks(runner: ModelRunner) -> int:
    """Steps whose greedy pick at batch 1 (the int4 side of the switch) differs at batch 6 (bf16 side)."""
    alone = [generate(runner, [p])[0] for p in PROMPTS]
    together = forced(runner, PROMPTS, alone)
    return sum(t != max(top, key=top.__getitem__) for ts, tops in zip(alone, together) for t, top in zip(ts, tops))


def test_the_switch_to_bf16_weights_moves_no_more_picks_than_on_the_torch_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides of the switch keep computing with the same effective weights (bf16-rounded on the
    large side): the native small side flips no more greedy picks against it than torch's int4 kernel."""
    native_kernels()
    fast, torch_path = coded_runner(monkeypatch, "auto"), coded_runner(monkeypatch, "off")
    assert switched_picks(fast) <= switched_picks(torch_path) + 1


def test_one_step_logits_of_both_paths_are_close(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    fast, torch_path = coded_runner(monkeypatch, "auto"), coded_runner(monkeypatch, "off")
    ids, positions = torch.tensor([5, 9, 200, 31]), torch.arange(4)
    with torch.inference_mode():
        a = fast.model(ids, positions, dense_attention).float()  # 4 rows: the fused layers
        b = torch_path.model(ids, positions, dense_attention).float()
    # a bf16 rounding that one float32 ulp tips goes one bf16 step (2^-8) the other way; a few such
    # steps through two layers stay within a percent of the logits' scale
    tol = 0.01 * b.abs().max()
    assert (a - b).abs().max() <= tol
    # each row's pick is the torch path's too, or within twice that of its best (a near-tie)
    assert (b.gather(1, a.argmax(-1, keepdim=True)).squeeze(1) >= b.max(-1).values - 2 * tol).all()


def test_deterministic_mode_stays_batch_invariant_on_the_native_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    runner = coded_runner(monkeypatch, "auto", attention="deterministic")
    assert runner.model.native is not None

    def logprobs(prompts: list[list[int]]) -> list[list[float]]:
        pool = BlockPool(runner.num_blocks)
        seqs = [Sequence(list(p), SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=2))
                for p in prompts]
        got: list[list[float]] = [[] for _ in seqs]
        counts, prefill = [len(p) for p in prompts], True
        for _ in range(6):
            for seq, n in zip(seqs, counts):
                pool.fill(seq, runner.block_size, seq.num_cached_tokens + n)
            out = runner.run(ScheduledBatch(tuple(seqs), tuple(counts), num_decodes=0 if prefill else len(seqs)))
            for i, (seq, n, token, lp) in enumerate(zip(seqs, counts, out.token_ids, out.logprobs)):
                seq.num_cached_tokens += n
                assert token is not None and lp is not None
                seq.append_token(token)
                got[i].append(lp.logprob)
            counts, prefill = [1] * len(seqs), False
        return got

    together = logprobs(PROMPTS)  # prefills of 2-12 rows in tiles of 4, decodes of 6 rows
    assert [logprobs([p])[0] for p in PROMPTS] == together  # bit for bit


def test_without_the_library_the_torch_path_runs_and_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HYBRIDGW_NATIVE_DIR", str(tmp_path / "empty"))  # no library built there yet
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="local_engine.native.kernels"):
        broken = coded_runner(monkeypatch, "auto")
    assert [r.getMessage() for r in caplog.records if "native kernels: unavailable" in r.getMessage()]
    assert broken.model.native is None
    layer = broken.model.decoder_layers[0]
    assert layer.fused is None and all(isinstance(v, tuple) for v in layer.int4.values())
    monkeypatch.delenv("CXX")
    reference = coded_runner(monkeypatch, "off")
    assert generate(broken, PROMPTS[:2]) == generate(reference, PROMPTS[:2])


def test_a_q4_1_gguf_runs_natively_and_picks_the_torch_paths_tokens(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real loader: a Q4_1 GGUF with a Q8_0 embedding (SmolLM2's formats) reports the native
    path (the engine's ready line and /v1/engine/state show it), and its greedy picks are torch's."""
    native_kernels()
    monkeypatch.setenv("HYBRIDGW_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "q4.gguf"
    _write_tiny_gguf(path, seed=2, matrices=Q.Q4_1, embedding=Q.Q8_0)
    fast = load_engine_model(str(path), dtype="bf16", kv_cache_bytes=1 << 20, activations="bf16").runner
    monkeypatch.setenv("HYBRIDGW_NATIVE", "off")
    reference = load_engine_model(str(path), dtype="bf16", kv_cache_bytes=1 << 20).runner
    assert (fast.model.kernels_path, reference.model.kernels_path) == ("native", "torch")
    alone = [generate(fast, [p])[0] for p in PROMPTS]
    assert sum(near_ties(t, forced(reference, [p], [t])[0]) for p, t in zip(PROMPTS, alone)) <= 2


def test_the_one_call_decode_layer_equals_its_calls_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """hg_decode_layer (a decode step's layer in one native call) against FusedLayer's separate calls
    around the same native attention: the same bits out and in the cache."""
    native_kernels()
    runner = coded_runner(monkeypatch, "auto")
    model, layer = runner.model, runner.model.decoder_layers[1]
    assert layer.fused is not None
    cfg = model.config
    cache = torch.randn(cfg.num_layers, 2 * cfg.num_kv_heads, 16, 4, cfg.head_dim).to(torch.bfloat16)
    tables, starts = [[3, 5, 7], [2], [9, 11]], [9, 2, 6]  # 1-3 sequences decoding at these positions
    x = torch.randn(3, cfg.hidden_size)
    cos_sin = model.rope_table[torch.tensor(starts)].to(torch.bfloat16)
    cos, sin_signed = cos_sin[:, 0:1], cos_sin[:, 1:2]
    results = []
    for one_call in (True, False):
        pool = cache.clone()
        attend = native_decode_attention(model.native, pool, cfg.num_heads, tables, starts, [1, 1, 1])
        assert isinstance(attend, NativeDecodeAttention)
        with torch.inference_mode():
            out = layer.fused.forward(1, x, cos, sin_signed, attend if one_call else (
                lambda i, q, k, v, a=attend: a(i, q, k, v)))  # a plain callable: the call-by-call path
        results.append((out, pool))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert not torch.equal(results[0][1], cache)  # the new tokens' K/V were stored


@pytest.mark.parametrize("activations", ["bf16", "int8"])
def test_the_one_call_layer_stack_equals_the_layers_one_by_one(monkeypatch: pytest.MonkeyPatch,
                                                               activations: str) -> None:
    """hg_decode_layers (all layers of a decode step in one native call) against the per-layer calls: the
    same greedy tokens and bit-equal logprobs over decode steps of 1-3 sequences."""
    native_kernels()
    stacked = coded_runner(monkeypatch, "auto", activations=activations)
    by_layer = coded_runner(monkeypatch, "auto", activations=activations)
    stack, calls = stacked.model.fused_stack, []
    assert stack is not None

    class Counted:  # the stack, its calls counted: the steps below must take it
        def forward(self, *args: object) -> torch.Tensor:
            calls.append(1)
            return stack.forward(*args)  # type: ignore[arg-type]

    stacked.model.fused_stack = Counted()  # type: ignore[assignment]
    by_layer.model.fused_stack = None
    for prompts in (PROMPTS[:1], PROMPTS[:3]):
        tokens = [generate(stacked, prompts)[0]]
        assert generate(by_layer, prompts)[0] == tokens[0]
        assert forced(stacked, prompts, [tokens[0]] * len(prompts)) == forced(by_layer, prompts,
                                                                               [tokens[0]] * len(prompts))
    assert len(calls) >= 2 * 2 * 11  # every decode step of both runs, both batch sizes
