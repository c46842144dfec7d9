"""The int4 switch: matmuls of a few rows read the 4-bit codes, larger ones the bf16 weights — the same weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from local_engine.loaders.gguf_quants import int8_as_int4_halves
from local_engine.loaders.tiny_random import tiny_random_config, tiny_random_tensors
from local_engine.model import build_model
from local_engine.weights import (
    INT4_SUFFIXES,
    can_prepack,
    fuse_hf_state_dict,
    int4_effective_weight,
    linear,
    pack_int4,
)

bf16_cpu = pytest.mark.skipif(not can_prepack(torch.zeros(1, dtype=torch.bfloat16)),
                              reason="the int4 path runs on CPUs with native bf16 only")


def codes(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)
    scale = torch.rand(n, k // 32, generator=g) * 0.01 + 0.001  # float32, as a file's f16 scales widen
    zero = torch.randn(n, k // 32, generator=g) * 0.01
    return q, scale, zero


@bf16_cpu
def test_the_int4_kernel_computes_with_the_effective_weight() -> None:
    q, scale, zero = codes(64, 128)
    x = torch.randn(3, 128).to(torch.bfloat16)
    out = linear(x, torch.empty(0), None, None, pack_int4(q, scale, zero))
    exact = (x.float() @ int4_effective_weight(q, scale, zero, torch.float32).T).to(torch.bfloat16)
    assert torch.equal(out, exact)


@bf16_cpu
def test_layers_with_4bit_codes_use_the_same_weights_for_large_matmuls() -> None:
    config = tiny_random_config(vocab_size=128, bos_token_id=None, eos_token_ids=(0,))
    state = fuse_hf_state_dict(config, tiny_random_tensors(config, seed=3))
    model = build_model(config, state, dtype=torch.bfloat16, device="cpu")
    layer = model.decoder_layers[0]
    n, k = layer.o_proj.weight.shape
    layer.int4_codes["o_proj"] = codes(n, k)
    assert model.prepack_weights("bf16")  # bf16 activations: the int8 side's bound is in test_native_int8.py
    assert torch.equal(layer.o_proj.weight, int4_effective_weight(*codes(n, k), torch.bfloat16))
    x = torch.randn(8, k).to(torch.bfloat16)
    big = linear(x, layer.o_proj.weight, None, layer.packed["o_proj"], layer.int4["o_proj"]).float()  # bf16 path
    small = torch.cat([linear(x[i:i + 1], layer.o_proj.weight, None, layer.packed["o_proj"], layer.int4["o_proj"])
                       for i in range(8)]).float()  # int4 path
    # one weight rounding (2^-9 of each |x_i w_i|) and the two outputs' roundings apart, no more
    exact = int4_effective_weight(*codes(n, k), torch.float32)
    bound = 2 ** -9 * (x.float().abs() @ exact.abs().T) + 2 ** -8 * big.abs() + 1e-6
    assert ((big - small).abs() <= bound).all()


def test_q8_0_codes_split_into_two_4bit_halves_that_sum_to_the_weight() -> None:
    rng = np.random.default_rng(0)
    q8 = rng.integers(-128, 128, size=(6, 64), dtype=np.int8)
    scale = rng.random((6, 2), dtype=np.float32) * 0.01
    codes, scales, zeros = int8_as_int4_halves(q8, scale)
    assert codes.shape == (12, 64) and codes.dtype == np.uint8 and int(codes.max()) <= 15
    dq = (codes.astype(np.float64) - 8) * np.repeat(scales, 32, axis=1) + np.repeat(zeros, 32, axis=1)
    assert np.array_equal(dq[:6] + dq[6:], q8.astype(np.float64) * np.repeat(scale, 32, axis=1))


@bf16_cpu
def test_one_row_logits_read_the_heads_own_codes() -> None:
    config = tiny_random_config(vocab_size=128, bos_token_id=None, eos_token_ids=(0,))
    state = fuse_hf_state_dict(config, tiny_random_tensors(config, seed=3))
    g = torch.Generator().manual_seed(1)
    q8 = torch.randint(-128, 128, (128, config.hidden_size), dtype=torch.int8, generator=g)
    scale = torch.rand(128, config.hidden_size // 32, generator=g) * 0.01  # not the embedding: tells them apart
    state |= {f"head{s}": torch.from_numpy(a) for s, a in zip(INT4_SUFFIXES, int8_as_int4_halves(q8.numpy(),
                                                                                                   scale.numpy()))}
    model = build_model(config, state, dtype=torch.bfloat16, device="cpu")
    assert model.prepack_weights() and model.head_int4 is not None
    x = torch.randn(1, config.hidden_size)
    head = model.embed_tokens.weight
    weight = q8.float() * scale.to(torch.bfloat16).float().repeat_interleave(32, dim=1)  # bf16-rounded scales
    exact = x.to(torch.bfloat16).float() @ weight.T
    one = model._project(x, head)
    # two halves, each rounded to bf16 once (2^-8 relative), then added in float32
    assert ((one - exact).abs() <= 2 ** -7 * (x.to(torch.bfloat16).float().abs() @ weight.abs().T) + 1e-6).all()
    two = model._project(x.expand(2, -1), head)  # two rows: the bf16 embedding, as before
    assert torch.equal(two[0], (x.to(torch.bfloat16) @ head.T).float()[0])
