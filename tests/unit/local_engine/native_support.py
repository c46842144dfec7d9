"""Shared by the native-kernel tests: the kernels (or a skip where they cannot exist) and random 4-bit codes."""
from __future__ import annotations

import platform
import shutil

import pytest
import torch

from local_engine.native.build import compiler
from local_engine.native.kernels import NativeKernels, load_kernels


def native_kernels(threads: int = 2, activations: str = "bf16") -> NativeKernels:
    """The kernels; a skip only where they cannot build (no x86-64, no compiler) — elsewhere a failure."""
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which(compiler()) is None:
        pytest.skip("the native kernels need an x86-64 CPU and a C++ compiler")
    kernels = load_kernels(threads, activations)
    assert kernels is not None, "the native kernels did not build or load (see the log)"
    return kernels


def codes(n: int, k: int, seed: int = 0, step: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random Q4_1-like codes: q (n, k) in 0..15, scale (n, k/32) > 0 and zero (n, k/32), float32."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=g)
    scale = torch.rand(n, k // 32, generator=g) * step + step / 10
    zero = torch.randn(n, k // 32, generator=g) * step
    return q, scale, zero
