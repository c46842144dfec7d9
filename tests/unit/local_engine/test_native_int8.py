"""8-bit activations in the native 4-bit matmul: the dequantized product (torch reference), the AVX2 build
bit-equal to the VNNI one, rows and threads independent, and the engine on them (int8 on vs off, the
--deterministic default and its batch invariance, the setting's plumbing)."""
from __future__ import annotations

import ctypes

import pytest
import torch

from local_engine.cli import config_from_args, parse_args
from local_engine.config import ConfigError, EngineConfig
from local_engine.native.build import build
from local_engine.native.kernels import (
    DEFAULT_SPLIT_WORK,
    OUT_HALVES,
    X_RMSNORM,
    NativeKernels,
    activations_setting,
    pack_q4,
)
from local_engine.runner import ModelRunner
from local_engine.weights import int4_effective_weight

from .native_support import codes, native_kernels
from .test_native_model import PROMPTS, coded_model, coded_runner, forced, generate

SHAPES = [(200, 576, 1), (70, 576, 3), (64, 1536, 4), (48, 96, 2), (40, 544, 7), (33, 32, 1)]  # (N, K, rows)


def dequantized(x: torch.Tensor) -> torch.Tensor:
    """x (S, K) -> d * a in float64: a = round_half_even(x / d) per group of 32, d = max|x| / 127 (float32)."""
    s, k = x.shape
    xg = x.float().view(s, k // 32, 32)
    d = xg.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    return (torch.round(xg * inv).clamp(-127, 127).double() * d.double()).view(s, k)


def float32_bound(xq: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """Rounding bound of the kernel's float32 sums: a term's path is the rounded s*d, its product's fma into
    a lane (G/4 of them), the zero term's (G/16) and the lane reductions (5): under G + 16 roundings of the
    summed magnitudes (the integer partials are exact)."""
    s = scale.to(torch.bfloat16).double().repeat_interleave(32, 1)
    z = zero.to(torch.bfloat16).double().repeat_interleave(32, 1)
    magnitude = xq.abs() @ ((q.double() - 8).abs() * s + z.abs()).T
    return (xq.shape[1] // 32 + 16) * 2.0 ** -24 * magnitude + 1e-30


@pytest.mark.parametrize(("n", "k", "rows"), SHAPES)
def test_the_int8_product_is_the_dequantized_rows_times_the_effective_weight(n: int, k: int, rows: int) -> None:
    kernels = native_kernels(activations="int8")
    q, scale, zero = codes(2 * n, k, seed=n + rows)
    x = torch.randn(rows, k).to(torch.bfloat16)
    # OUT_HALVES: float32 out (rows n and n + N/2 summed), so only the float32 sums separate it from the reference
    out = kernels.q4_linear(pack_q4(q, scale, zero), x, out_mode=OUT_HALVES).double()
    w = int4_effective_weight(q, scale, zero, torch.float64)
    xq = dequantized(x)
    ref = xq @ w.T
    bound = float32_bound(xq, q, scale, zero)
    assert ((out - (ref[:, :n] + ref[:, n:])).abs() <= bound[:, :n] + bound[:, n:]).all()
    # and not the bf16 inputs' product: quantization moves it far more than the kernel's float32 sums
    exact = x.double() @ w.T
    off_ref, off_exact = (out - ref[:, :n] - ref[:, n:]).abs().mean(), (out - exact[:, :n] - exact[:, n:]).abs().mean()
    assert off_ref < 0.01 * off_exact


def test_bf16_out_rounds_the_same_sum_once() -> None:
    kernels = native_kernels(activations="int8")
    q, scale, zero = codes(96, 576, seed=11)
    x = torch.randn(3, 576).to(torch.bfloat16)
    out = kernels.q4_linear(pack_q4(q, scale, zero), x).double()
    ref = dequantized(x) @ int4_effective_weight(q, scale, zero, torch.float64).T
    bound = float32_bound(dequantized(x), q, scale, zero)
    assert ((out - ref).abs() <= 2.0 ** -8 * (ref.abs() + bound) + bound).all()


def avx2_build() -> NativeKernels:
    """The library as a CPU without AVX512 gets it (-march=x86-64-v3: AVX2 and FMA); -O1 halves the compile
    time and changes no result (explicit intrinsics, no FP contraction)."""
    native_kernels()  # skips where no library can be built
    return NativeKernels(ctypes.CDLL(str(build(extra_flags=("-march=x86-64-v3", "-O1")))), "x86-64-v3", 2, "int8")


def has_vnni() -> bool:
    with open("/proc/cpuinfo") as f:
        return "avx512_vnni" in f.read()


def test_the_avx2_path_is_bit_equal_to_the_vnni_path() -> None:
    native = native_kernels(activations="int8")
    if not has_vnni():  # before the second build: it would only be compiled to be skipped
        pytest.skip("this CPU has no AVX512-VNNI: both builds take the AVX2 path")
    portable = avx2_build()
    assert native.vnni and not portable.vnni
    for n, k, rows in SHAPES:
        w = pack_q4(*codes(2 * n, k, seed=k + rows))
        x = torch.randn(rows, k).to(torch.bfloat16)
        assert torch.equal(native.q4_linear(w, x), portable.q4_linear(w, x))
        assert torch.equal(native.q4_linear(w, x, out_mode=OUT_HALVES), portable.q4_linear(w, x, out_mode=OUT_HALVES))
        xf, norm = torch.randn(rows, k) * 2, torch.rand(k) + 0.5
        assert torch.equal(native.q4_linear(w, xf, x_mode=X_RMSNORM, norm=norm, eps=1e-5),
                           portable.q4_linear(w, xf, x_mode=X_RMSNORM, norm=norm, eps=1e-5))


def test_an_int8_row_does_not_depend_on_the_other_rows_or_the_threads() -> None:
    one, two = native_kernels(threads=1, activations="int8"), native_kernels(threads=2, activations="int8")
    w = pack_q4(*codes(3072, 1536, seed=5))  # above the threshold for a second thread
    x = torch.randn(9, 1536).to(torch.bfloat16)
    alone = torch.cat([one.q4_linear(w, x[i:i + 1]) for i in range(9)])
    assert torch.equal(two.q4_linear(w, x), alone)
    two.set_threading(use_openmp=False, min_work=1)  # the pool, every call split
    try:
        assert torch.equal(two.q4_linear(w, x[2:5]), alone[2:5])
        two.set_threading(use_openmp=True)  # OpenMP, calls of >= 4 M multiply-adds
        assert torch.equal(two.q4_linear(w, x), alone)
    finally:
        two.set_threading(use_openmp=False, min_work=DEFAULT_SPLIT_WORK)  # process-wide: back to the default


def test_the_engine_on_int8_activations_stays_near_the_bf16_path(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    int8, bf16 = coded_runner(monkeypatch, "auto", activations="int8"), coded_runner(monkeypatch, "auto")
    assert (int8.model.native.activations, bf16.model.native.activations) == ("int8", "bf16")
    assert (int8.model.kernels_path, bf16.model.kernels_path) == ("native+int8", "native")  # the ready line's
    alone = [generate(int8, [p])[0] for p in PROMPTS]  # batch-1 decode steps: the fused layer and head
    assert all(len(t) == 12 for t in alone)
    # teacher-forced along int8's text, the bf16 path's logprobs: its picks are near the top, and differ
    # from bf16's own logprobs (int8 really ran) by at most a few hundredths on average
    tops_bf16 = [forced(bf16, [p], [t])[0] for p, t in zip(PROMPTS, alone)]
    tops_int8 = [forced(int8, [p], [t])[0] for p, t in zip(PROMPTS, alone)]
    dlp = [abs(a[t] - b[t]) for ts, ta, tb in zip(alone, tops_int8, tops_bf16) for t, a, b in zip(ts, ta, tb)
           if t in a and t in b]
    assert len(dlp) >= 0.9 * 12 * len(PROMPTS)
    assert 0 < sum(dlp) / len(dlp) < 0.05
    assert sum(max(b, key=b.__getitem__) == t for ts, tb in zip(alone, tops_bf16) for t, b in zip(ts, tb)) >= 0.8 * len(dlp)


def test_deterministic_defaults_to_bf16_and_stays_batch_invariant_on_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    native_kernels()
    monkeypatch.delenv("HYBRIDGW_ACTIVATIONS", raising=False)
    model = coded_model()
    default = ModelRunner(model, model.config, device="cpu", dtype=model.dtype, kv_dtype=None, num_blocks=128,
                          block_size=4, attention="deterministic")
    assert default.model.native.activations == "bf16"
    model = coded_model()
    runner = ModelRunner(model, model.config, device="cpu", dtype=model.dtype, kv_dtype=None, num_blocks=128,
                         block_size=4, attention="deterministic", activations="int8")
    assert runner.model.native.activations == "int8"
    together = generate(runner, PROMPTS)  # decodes of 6 rows: tiles of 4 rows, the last one padded
    assert [generate(runner, [p])[0] for p in PROMPTS] == together


def test_the_setting_resolves_flag_then_env_then_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDGW_ACTIVATIONS", raising=False)
    assert activations_setting() == "int8"
    monkeypatch.setenv("HYBRIDGW_ACTIVATIONS", "bf16")
    assert activations_setting() == "bf16" and activations_setting("int8") == "int8"
    monkeypatch.setenv("HYBRIDGW_ACTIVATIONS", "fp8")
    with pytest.raises(ValueError):
        activations_setting()
    with pytest.raises(ConfigError):
        EngineConfig(model="tiny-random", activations="fp8")
    assert config_from_args(parse_args(["--model", "tiny-random", "--activations", "bf16"])).activations == "bf16"
    assert config_from_args(parse_args(["--model", "tiny-random"])).activations is None  # int8 / bf16 if deterministic


def test_the_split_setting_splits_small_matmuls_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = native_kernels(threads=1, activations="int8")
    monkeypatch.setenv("HYBRIDGW_NATIVE_SPLIT_WORK", "1")  # every call over the pool, however small
    split = native_kernels(threads=2, activations="int8")
    try:
        w = pack_q4(*codes(256, 576, seed=8))
        x = torch.randn(3, 576).to(torch.bfloat16)
        assert torch.equal(split.q4_linear(w, x), plain.q4_linear(w, x))
    finally:
        split.set_threading(use_openmp=False, min_work=DEFAULT_SPLIT_WORK)  # process-wide: back to the default
