"""Decode rows of any count attend through the native paged kernel (blocks read in place), in decode-only and
mixed steps alike, and pick the tokens the bmm path over a gathered copy (with its decode mirror) picks."""
from __future__ import annotations

import pytest

from .native_support import native_kernels
from .test_mixed_pass import CHUNKS, _mixed_run, count_kernel_rows
from .test_native_model import PROMPTS, coded_runner, forced, generate

# The bmm path rounds its scores and probabilities to bf16, the kernel keeps them in float32: a pick may flip
# where the two best logprobs lie this close (measured here: 0.026 at most)
TIE = 0.05


def near_ties(tokens: list[int], tops: list[dict[int, float]]) -> int:
    """Steps where ``tokens`` differ from the other path's greedy pick; fails unless each is a near-tie."""
    differ = 0
    for token, top in zip(tokens, tops):
        best = max(top, key=top.__getitem__)
        if token != best:
            assert token in top and top[token] >= top[best] - TIE, (token, top)
            differ += 1
    return differ


def test_six_decodes_take_the_kernel_and_the_bmm_paths_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    runner, capped = coded_runner(monkeypatch, "auto"), coded_runner(monkeypatch, "auto")
    capped.native_decode_max_seqs = 3  # the earlier limit: six decodes through the bmm path and its mirror
    calls = count_kernel_rows(monkeypatch)
    picks = generate(runner, PROMPTS, new_tokens=8)
    layers = runner.model_config.num_layers
    assert calls == [len(PROMPTS)] * 7 * layers  # every decode step, one call a layer, all six rows
    calls.clear()
    tops = forced(capped, PROMPTS, picks)  # the bmm path fed the same tokens
    assert calls == []
    assert sum(near_ties(p, t) for p, t in zip(picks, tops)) <= 2


def test_a_mixed_step_attends_its_four_decodes_in_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    one, apart = coded_runner(monkeypatch, "auto"), coded_runner(monkeypatch, "auto")
    apart.native_decode_max_seqs = 3  # the mixed steps' decodes through the mirror
    calls = count_kernel_rows(monkeypatch)
    got = _mixed_run(one, 4)
    layers = one.model_config.num_layers
    # each mixed step's four decodes, then the last step's five (the first decode step's four rows run the
    # fused layer stack, which calls the kernel from C)
    assert calls == [4] * len(CHUNKS) * layers + [5] * layers
    assert one.mirror._snapshot is None  # the kernel's steps leave no mirror behind
    picks = [[t for t, _, _ in ts] for ts in got]
    expected = _mixed_run(apart, 4, forced=picks)
    assert sum(near_ties(p, [top for _, _, top in es]) for p, es in zip(picks, expected)) <= 2
