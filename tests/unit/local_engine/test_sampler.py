"""Sampling: greedy, seeds, top-k / top-p support, penalties, logprobs."""
from __future__ import annotations

import math

import pytest
import torch

from local_engine.sampler import SamplingRow, _argmax, sample
from local_engine.sequence import SamplingParams

V = 50


def _logits(rows: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 2


def _draws(params: SamplingParams, logits: torch.Tensor, n: int, output: list[int] | None = None) -> list[int]:
    rows = [SamplingRow(params, list(output or []))] * n
    return sample(logits.expand(n, logits.shape[1]).clone(), rows)[0]


def test_greedy_is_argmax() -> None:
    logits = _logits(3)
    ids, lps = sample(logits, [SamplingRow(SamplingParams(temperature=0.0), [])] * 3)
    assert ids == logits.argmax(-1).tolist()
    assert lps == [None, None, None]


def test_seeded_rows_are_reproducible_whatever_the_batch() -> None:
    logits = _logits() * 0.25  # flat enough that 20 draws show variety
    seeded = SamplingParams(temperature=1.0, seed=1234)
    alone = [sample(logits, [SamplingRow(seeded, list(range(i)))])[0][0] for i in range(20)]
    mixed_rows = [SamplingRow(SamplingParams(temperature=1.0), [])] * 3
    again = [sample(torch.cat([_logits(3, seed=9), logits]), mixed_rows + [SamplingRow(seeded, list(range(i)))])[0][3]
             for i in range(20)]
    assert alone == again
    other = [sample(logits, [SamplingRow(SamplingParams(temperature=1.0, seed=99), list(range(i)))])[0][0]
             for i in range(20)]
    assert other != alone
    assert len(set(alone)) > 3  # it really samples


def test_top_p_over_a_flat_distribution_looks_past_the_first_candidates() -> None:
    # 1000 equal tokens and p=0.9: the nucleus is ~900 wide, wider than the first 256 candidates
    logits = torch.zeros(1, 1000)
    draws = _draws(SamplingParams(temperature=1.0, top_p=0.9), logits, 6000)
    assert 880 < len(set(draws)) <= 901


def test_top_k_limits_support() -> None:
    logits = _logits(seed=1)
    allowed = set(logits[0].topk(3).indices.tolist())
    draws = _draws(SamplingParams(temperature=5.0, top_k=3), logits, 400)
    assert set(draws) == allowed


def test_top_p_keeps_the_smallest_nucleus() -> None:
    logits = torch.full((1, V), -10.0)
    logits[0, :4] = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    # nucleus for p=0.75: 0.5 + 0.3 reaches it, so tokens 0 and 1 only
    assert set(_draws(SamplingParams(temperature=1.0, top_p=0.75), logits, 400)) == {0, 1}
    assert set(_draws(SamplingParams(temperature=1.0, top_p=0.9), logits, 600)) == {0, 1, 2}
    assert set(_draws(SamplingParams(temperature=1.0, top_p=0.01), logits, 50)) == {0}


def test_sampling_follows_the_distribution() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    rows = [SamplingRow(SamplingParams(temperature=1.0), [])] * 4000
    ids, _ = sample(logits.expand(4000, 3).clone(), rows)
    share = ids.count(0) / 4000
    assert 0.65 < share < 0.75


def test_penalties_push_away_repeated_tokens() -> None:
    logits = torch.zeros(1, V)
    logits[0, 7] = 1.0
    logits[0, 8] = 0.9
    plain = sample(logits, [SamplingRow(SamplingParams(temperature=0.0), [7, 7])])[0]
    presence = sample(logits, [SamplingRow(SamplingParams(temperature=0.0, presence_penalty=0.5), [7])])[0]
    frequency = sample(logits, [SamplingRow(SamplingParams(temperature=0.0, frequency_penalty=0.06), [7, 7])])[0]
    weak = sample(logits, [SamplingRow(SamplingParams(temperature=0.0, frequency_penalty=0.04), [7, 7])])[0]
    assert (plain, presence, frequency, weak) == ([7], [8], [8], [7])


def test_logprobs_of_chosen_and_top_tokens() -> None:
    logits = _logits(seed=4)
    ids, lps = sample(logits, [SamplingRow(SamplingParams(temperature=0.0, logprobs=2), [])])
    expected = torch.log_softmax(logits[0], -1)
    lp = lps[0]
    assert lp is not None and lp.token_id == ids[0]
    assert lp.logprob == pytest.approx(float(expected[ids[0]]), abs=1e-5)
    assert [t for t, _ in lp.top] == expected.topk(2).indices.tolist()
    assert math.fsum(math.exp(x) for x in expected.tolist()) == pytest.approx(1.0, abs=1e-4)


def test_argmax_picks_what_torch_argmax_picks() -> None:
    logits = torch.randn(8, 1024, generator=torch.Generator().manual_seed(3))
    logits[1, 200] = logits[1, 700] = 50.0  # a tie: the first index wins
    logits[2, 10] = logits[2, 11] = 50.0
    logits[3, 900] = logits[3, 40] = float("nan")  # argmax's NaN rule: the first NaN
    logits[4] = float("-inf")  # nothing finite: index 0
    logits[5, 3] = logits[5, 600] = float("inf")
    logits[6, 7], logits[6, 8] = -0.0, 0.0  # equal values: the first
    logits[6, 9:] = -1.0
    logits[6, :7] = -1.0
    for rows in (logits, logits[:1], logits[[3]], logits[:, ::2], logits.T.contiguous().T):  # shapes, strides
        assert torch.equal(_argmax(rows), rows.argmax(dim=-1)) and _argmax(rows).dtype == torch.int64
    odd = torch.randn(4, 1000)
    assert torch.equal(_argmax(odd), odd.argmax(dim=-1))
    assert torch.equal(_argmax(odd.double()), odd.argmax(dim=-1))  # not float32: torch's own
