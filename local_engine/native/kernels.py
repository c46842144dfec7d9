"""The native library through ctypes: loading it (or saying once why not) and typed calls on tensors.

``HYBRIDGW_NATIVE=off`` keeps the torch path; by default the library is built on first use when the
cache has none (``build.py``), and any failure falls back to torch with one log line. The 4-bit matmuls
take their input rows as bf16 values or quantized to 8 bits first (``activations``; ``HYBRIDGW_ACTIVATIONS``).
Calls of >= DEFAULT_SPLIT_WORK multiply-adds split over the kernels' own spinning pool (every SmolLM2 layer
matmul); ``HYBRIDGW_NATIVE_SPLIT_WORK=N`` sets the threshold, ``=0`` the earlier default (OpenMP, >= 4 M).
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass

import torch

from local_engine.native.build import BuildError, build

log = logging.getLogger(__name__)

_ABI_VERSION = 2
_GROUP = 32
# x_mode / out_mode of hg_q4_linear (kernels.cpp)
X_BF16, X_RMSNORM, X_SILU_MUL = 0, 1, 2
OUT_BF16, OUT_RESIDUAL, OUT_HALVES = 0, 1, 2
# Pool workers spin this long for the next matmul before sleeping: longer than the gaps inside a decode
# step (attention, Python: tens of µs), shorter than those between steps (the server's work: ms)
DEFAULT_SPIN_US = 200
# Calls of at least this many multiply-adds split over the pool: SmolLM2's layer matmuls (0.33-1.8 M) too.
# Measured on the busy 2-core box, batch-1 decode step p50: 0.77-0.73x wall of OpenMP with its 4 M floor,
# the same CPU (docs/benchmarks.md, #14) — the pool's caller takes the chunks of a worker not yet running.
DEFAULT_SPLIT_WORK = 1 << 18
# The matmuls' input rows: "bf16" as they are, or "int8": quantized per group of 32 (llama.cpp's Q8 blocks)
# for integer dot products with the 4-bit codes (q8_matmul.h)
ACTIVATIONS = ("bf16", "int8")


@dataclass(frozen=True)
class Q4Weight:
    """A 4-bit matrix (N, K) in the kernels' layout: w = (q - 8) * scale + zero per group of 32."""

    codes: torch.Tensor  # (N, K/2) uint8: group g's byte j holds element j (low nibble) and j + 16 (high)
    scales_zeros: torch.Tensor  # (N, K/32, 2) bfloat16: (scale, zero)
    n: int = 0  # N, K and the two tensors' addresses, read once (a small step makes ~150 calls)
    k: int = 0
    codes_ptr: int = 0
    scales_zeros_ptr: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.k


def pack_q4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> Q4Weight:
    """q (N, K) codes 0..15, scale / zero (N, K/32) -> the kernels' layout (scale and zero rounded to
    bf16, as the torch int4 path stores them: the same effective weights)."""
    n, k = q.shape
    groups = q.to(torch.uint8).view(n, k // _GROUP, 2, _GROUP // 2)  # (N, G, halves, 16)
    codes = (groups[:, :, 0] | (groups[:, :, 1] << 4)).reshape(n, k // 2).contiguous()
    scales_zeros = torch.stack([scale, zero], dim=-1).to(torch.bfloat16).contiguous()
    return Q4Weight(codes, scales_zeros, n, k, codes.data_ptr(), scales_zeros.data_ptr())


class NativeKernels:
    """Typed wrappers over the loaded library; ``threads``: OpenMP threads of each matmul."""

    def __init__(self, lib: ctypes.CDLL, path: str, threads: int, activations: str = "bf16") -> None:
        self.path, self.threads = path, max(1, threads)
        self.set_activations(activations)
        self.vnni = bool(lib.hg_q8_vnni())  # the 8-bit dot products on AVX512-VNNI (else AVX2; same results)
        self._q4 = lib.hg_q4_linear
        self._q4.restype = ctypes.c_int
        p, i = ctypes.c_void_p, ctypes.c_int
        self._q4.argtypes = [i, i, i, p, i, p, ctypes.c_float, p, p, p, i, p, i, i]
        self._decode = lib.hg_paged_decode_bf16
        self._decode.restype = None
        self._decode.argtypes = [i, i, i, i, p, p, p, ctypes.c_long, p, ctypes.c_long, i, p, i, p,
                                 ctypes.c_float, p, i]
        self._threading = lib.hg_set_threading
        self._threading.restype = None
        self._threading.argtypes = [i, i, ctypes.c_long]
        self._layer = lib.hg_decode_layer
        self._layer.restype = ctypes.c_int
        self._layer.argtypes = [i, i, i, i, i, i, p, p, p, ctypes.c_float, p, p, p, p, p, p, p, p, p, p,
                                ctypes.c_long, p, ctypes.c_long, i, p, i, p, ctypes.c_float, p, i, i]
        self._layers = lib.hg_decode_layers
        self._layers.restype = ctypes.c_int
        self._layers.argtypes = [i, i, i, i, i, i, i, p, p, ctypes.c_float, p, p, ctypes.c_long, p, ctypes.c_long,
                                 ctypes.c_long, i, p, i, p, ctypes.c_float, p, i, i]
        self.chunk_ok = bool(lib.hg_chunk_attention_available())  # AVX512-BF16: else SDPA takes prefill chunks
        self._chunk = lib.hg_chunk_attention_bf16
        self._chunk.restype = ctypes.c_int
        self._chunk.argtypes = [i, i, i, i, p, ctypes.c_long, p, p, p, ctypes.c_long, i, p, i, ctypes.c_float, p, i]
        self._rope = lib.hg_rope_bf16
        self._rope.restype = None
        self._rope.argtypes = [i, i, i, p, ctypes.c_long, p, p, ctypes.c_long]

    def set_activations(self, activations: str) -> None:
        """Switch every later matmul's input rows to "bf16" or "int8" (ACTIVATIONS); for A/B benches."""
        if activations not in ACTIVATIONS:
            raise ValueError(f"activations must be one of {ACTIVATIONS}, not {activations!r}")
        self.activations, self._act = activations, ACTIVATIONS.index(activations)

    def set_threading(self, use_openmp: bool, spin_us: int = DEFAULT_SPIN_US, min_work: int = 0) -> None:
        """Split work over OpenMP threads (libgomp, shared with torch; the library's default) or over its
        own pool (dynamic chunks; workers spin ``spin_us`` between jobs, then sleep); calls of fewer than
        ``min_work`` multiply-adds stay on one thread (0: the library's default, 4 M). Process-wide."""
        self._threading(int(use_openmp), spin_us, min_work)

    def q4_linear(self, weight: Q4Weight, x: torch.Tensor, *, x_mode: int = X_BF16,
                  norm: torch.Tensor | None = None, eps: float = 0.0, out_mode: int = OUT_BF16,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
        """x (S, K) bf16 [X_RMSNORM: fp32; X_SILU_MUL: (S, 2K) bf16] -> (S, N) bf16 [OUT_RESIDUAL:
        residual + it, fp32; OUT_HALVES: (S, N/2) fp32, the two row halves summed]."""
        n, k = weight.shape
        s = x.shape[0]
        want = (torch.float32, k) if x_mode == X_RMSNORM else (torch.bfloat16, 2 * k if x_mode == X_SILU_MUL else k)
        if (x.dtype, x.shape[-1]) != want or (x_mode == X_RMSNORM and norm is None) or (
                out_mode == OUT_RESIDUAL and (residual is None or residual.shape != (s, n)
                                              or residual.dtype != torch.float32)):
            raise ValueError(f"q4_linear: x {x.dtype} {tuple(x.shape)} does not fit a ({n}, {k}) weight in mode "
                             f"{x_mode}/{out_mode}")
        return self.q4_unchecked(weight, x.contiguous(), x_mode, None if norm is None else norm.contiguous().data_ptr(),
                                 eps, out_mode, None if residual is None else residual.contiguous())

    def q4_unchecked(self, weight: Q4Weight, x: torch.Tensor, x_mode: int, norm_ptr: int | None, eps: float,
                     out_mode: int, residual: torch.Tensor | None) -> torch.Tensor:
        """q4_linear for callers that guarantee its checks (contiguous tensors of the right dtypes and
        shapes, as FusedLayer builds them): the small step's ~150 calls without their cost."""
        s, n = x.shape[0], weight.n
        if out_mode == OUT_BF16:
            out = torch.empty(s, n, dtype=torch.bfloat16)
        else:
            out = torch.empty(s, n // 2 if out_mode == OUT_HALVES else n, dtype=torch.float32)
        rc = self._q4(s, weight.k, n, x.data_ptr(), x_mode, norm_ptr, eps, weight.codes_ptr,
                      weight.scales_zeros_ptr, out.data_ptr(), out_mode,
                      None if residual is None else residual.data_ptr(), self._act, self.threads)
        if rc != 0:
            raise RuntimeError(f"hg_q4_linear failed ({rc}) for a {weight.shape} weight")
        return out

    def decode_layer(self, *args: int | float) -> None:
        """hg_decode_layer (kernels.cpp) on raw sizes and addresses, the activations and threads appended."""
        rc = self._layer(*args, self._act, self.threads)
        if rc != 0:
            raise RuntimeError(f"hg_decode_layer failed ({rc})")

    def decode_layers(self, *args: int | float) -> None:
        """hg_decode_layers (kernels.cpp): every layer of a decode step in one call; as decode_layer."""
        rc = self._layers(*args, self._act, self.threads)
        if rc != 0:
            raise RuntimeError(f"hg_decode_layers failed ({rc})")

    def rope_(self, qkv: torch.Tensor, heads: int, head_dim: int, cos: torch.Tensor, sin_signed: torch.Tensor) -> None:
        """Rotate the first ``heads`` heads of qkv (T, *) bf16 rows in place; cos / sin_signed (T, 1, D) bf16."""
        self._rope(qkv.shape[0], heads, head_dim, qkv.data_ptr(), qkv.stride(0), cos.data_ptr(),
                   sin_signed.data_ptr(), cos.stride(0))

    def chunk_attention(self, q: torch.Tensor, cache: torch.Tensor, block_tables: torch.Tensor,
                        starts: torch.Tensor, query_lens: torch.Tensor) -> torch.Tensor:
        """Causal attention of B sequences' prefill chunks over a layer's bf16 cache (2*KVH, N, block_size, D),
        their K/V already stored, blocks read in place (chunk_attention.h). q (T, H, D) bf16, each token's
        heads contiguous, the chunks' rows packed; block_tables (B, max_blocks) int64; starts / query_lens (B,)
        int32: each chunk's first position and length. -> (T, H, D) bf16; RuntimeError where unsupported."""
        T, H, D = q.shape
        if q.stride(2) != 1 or q.stride(1) != D:
            q = q.contiguous()
        two_kvh, num_blocks, block_size, _ = cache.shape
        out = torch.empty(T, H, D, dtype=torch.bfloat16)
        rc = self._chunk(starts.shape[0], H, two_kvh // 2, D, q.data_ptr(), q.stride(0), starts.data_ptr(),
                         query_lens.data_ptr(), cache.data_ptr(), num_blocks, block_size, block_tables.data_ptr(),
                         block_tables.shape[1], D ** -0.5, out.data_ptr(), self.threads)
        if rc != 0:
            raise RuntimeError(f"hg_chunk_attention_bf16 failed ({rc}): no AVX512-BF16, or D={D} unsupported")
        return out

    def paged_decode_(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: torch.Tensor,
                      block_tables: torch.Tensor, context_lens: torch.Tensor) -> torch.Tensor:
        """Store k, v (B, KVH, D) at each sequence's last position in a layer's bf16 cache
        (2*KVH, N, block_size, D), then attend q (B, H, D) over its context -> (B, H, D) bf16.

        q, k, v: rows of one qkv tensor (the same row stride, heads of D contiguous); block_tables
        (B, max_blocks) int64; context_lens (B,) int32, the new token included."""
        B, H, D = q.shape
        two_kvh, num_blocks, block_size, _ = cache.shape
        out = torch.empty(B, H, D, dtype=torch.bfloat16)
        self._decode(B, H, two_kvh // 2, D, q.data_ptr(), k.data_ptr(), v.data_ptr(), q.stride(0), cache.data_ptr(),
                     num_blocks, block_size, block_tables.data_ptr(), block_tables.shape[1],
                     context_lens.data_ptr(), D ** -0.5, out.data_ptr(), self.threads)
        return out


def activations_setting(activations: str | None = None) -> str:
    """The matmuls' activations: the argument, else HYBRIDGW_ACTIVATIONS, else "int8"; ValueError if unknown."""
    value = (activations or os.environ.get("HYBRIDGW_ACTIVATIONS") or "int8").lower()
    if value not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, not {value!r}")
    return value


# Prefill chunks' attention (HYBRIDGW_CHUNK_ATTENTION): "auto" the native kernel from 256 keys (attention.py),
# "native" always, "sdpa" never (the A/B)
CHUNK_ATTENTION = ("auto", "native", "sdpa")


def chunk_attention_setting() -> str:
    """HYBRIDGW_CHUNK_ATTENTION (CHUNK_ATTENTION), "auto" by default; ValueError if unknown."""
    value = os.environ.get("HYBRIDGW_CHUNK_ATTENTION", "auto").strip().lower() or "auto"
    if value not in CHUNK_ATTENTION:
        raise ValueError(f"HYBRIDGW_CHUNK_ATTENTION must be one of {CHUNK_ATTENTION}, not {value!r}")
    return value


def load_kernels(threads: int | None = None, activations: str | None = None) -> NativeKernels | None:
    """The native kernels, built if need be; None (with one log line saying why) when off or unavailable.
    ``activations``: see activations_setting."""
    act = activations_setting(activations)
    chunk_attention_setting()  # an unknown value fails at load, not at the first prompt
    setting = os.environ.get("HYBRIDGW_NATIVE", "auto").lower()
    if setting in ("0", "off", "false", "no"):
        log.warning("native kernels: off (HYBRIDGW_NATIVE=%s); small steps use the torch path", setting)
        return None
    try:
        path = build()
        lib = ctypes.CDLL(str(path))
        if lib.hg_abi_version() != _ABI_VERSION:
            raise OSError(f"{path} has ABI {lib.hg_abi_version()}, expected {_ABI_VERSION}")
    except (BuildError, OSError, AttributeError) as exc:
        log.warning("native kernels: unavailable (%s); small steps use the torch path", exc)
        return None
    kernels = NativeKernels(lib, str(path), threads or torch.get_num_threads(), act)
    split = os.environ.get("HYBRIDGW_NATIVE_SPLIT_WORK", "").strip().lower()
    if split in ("0", "off"):  # the earlier default: OpenMP, calls of >= 4 M multiply-adds only
        kernels.set_threading(use_openmp=True)
    else:
        kernels.set_threading(use_openmp=False, min_work=int(split) if split.isdigit() else DEFAULT_SPLIT_WORK)
    log.info("native kernels: on (%s, %d threads, %s activations%s)", path.name, kernels.threads, act,
             ", VNNI" if kernels.vnni and act == "int8" else "")
    return kernels
