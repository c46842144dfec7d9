"""Vectorised numpy dequantisation of GGML block formats (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K).

Other formats fall back to ``gguf.quants.dequantize``. Layouts follow ggml-quants.c.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

QK = 32  # elements per block of the simple formats
QK_K = 256  # elements per super-block of the K formats

# type id -> (elements per block, bytes per block), ids as in ggml.h
TYPE_F32, TYPE_F16, TYPE_Q4_0, TYPE_Q4_1, TYPE_Q8_0 = 0, 1, 2, 3, 8
TYPE_Q4_K, TYPE_Q6_K, TYPE_BF16 = 12, 14, 30


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    """The fp16 at byte ``start`` of every block, as float32 column (nb, 1)."""
    return blocks[:, start:start + 2].copy().view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(nb, 16) packed bytes -> (nb, 32) values: low nibbles are elements 0-15, high ones 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)


def _q8_0(blocks: np.ndarray) -> np.ndarray:  # block: d f16, qs int8[32]
    return _f16(blocks, 0) * blocks[:, 2:].view(np.int8).astype(np.float32)


def _q4_0(blocks: np.ndarray) -> np.ndarray:  # block: d f16, qs u8[16]; x = d * (q - 8)
    return _f16(blocks, 0) * (_nibbles(blocks[:, 2:]) - 8.0)


def _q4_1(blocks: np.ndarray) -> np.ndarray:  # block: d f16, m f16, qs u8[16]; x = d * q + m
    return _f16(blocks, 0) * _nibbles(blocks[:, 4:]) + _f16(blocks, 2)


def _k4_scales_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unpack the 12 bytes of 6-bit scales and mins of a Q4_K super-block: (nb, 8) each."""
    s = scales.astype(np.uint8)
    lo_sc = s[:, 0:4] & 63
    lo_m = s[:, 4:8] & 63
    hi_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    hi_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    sc = np.concatenate([lo_sc, hi_sc], axis=1).astype(np.float32)
    mn = np.concatenate([lo_m, hi_m], axis=1).astype(np.float32)
    return sc, mn


def _q4_k(blocks: np.ndarray) -> np.ndarray:  # block: d, dmin f16, scales u8[12], qs u8[128]
    nb = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    sc, mn = _k4_scales_mins(blocks[:, 4:16])
    qs = blocks[:, 16:144].reshape(nb, 4, 32)
    # each 32-byte chunk holds sub-block 2i in its low nibbles and 2i+1 in its high nibbles
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(nb, 8, 32).astype(np.float32)
    return ((d * sc)[:, :, None] * q - (dmin * mn)[:, :, None]).reshape(nb, QK_K)


def _q6_k(blocks: np.ndarray) -> np.ndarray:  # block: ql u8[128], qh u8[64], scales i8[16], d f16
    nb = blocks.shape[0]
    ql = blocks[:, 0:128].reshape(nb, 2, 64)
    qh = blocks[:, 128:192].reshape(nb, 2, 32)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32).reshape(nb, 2, 8)
    d = _f16(blocks, 208)
    # per half of 128 outputs: four groups of 32, each 4 low bits from ql and 2 high bits from qh
    q = np.stack([
        (ql[:, :, :32] & 0x0F) | (((qh >> 0) & 3) << 4),
        (ql[:, :, 32:] & 0x0F) | (((qh >> 2) & 3) << 4),
        (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4),
        (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4),
    ], axis=2).astype(np.float32) - 32.0  # (nb, 2, 4, 32)
    # scale index for element l of group g is g*2 + l//16
    q = q.reshape(nb, 2, 8, 16)
    return (d[:, :, None, None] * scales[:, :, :, None] * q).reshape(nb, QK_K)


_BLOCK_DEQUANT: dict[int, tuple[int, int, Callable[[np.ndarray], np.ndarray]]] = {
    TYPE_Q8_0: (QK, 34, _q8_0),
    TYPE_Q4_0: (QK, 18, _q4_0),
    TYPE_Q4_1: (QK, 20, _q4_1),
    TYPE_Q4_K: (QK_K, 144, _q4_k),
    TYPE_Q6_K: (QK_K, 210, _q6_k),
}


def dequantize(data: np.ndarray, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    """Raw tensor bytes (or typed array) of GGML type ``type_id`` -> float32 array of ``shape``."""
    if type_id == TYPE_F32:
        return np.array(np.asarray(data).view(np.float32).reshape(shape))  # a writable copy of the map
    if type_id == TYPE_F16:
        return np.asarray(data).view(np.float16).astype(np.float32).reshape(shape)
    if type_id == TYPE_BF16:
        bits = np.asarray(data).view(np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if type_id in _BLOCK_DEQUANT:
        block_elems, block_bytes, fn = _BLOCK_DEQUANT[type_id]
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1, block_bytes)
        return _in_chunks(raw, fn, block_elems).reshape(shape)
    return _gguf_fallback(data, type_id, shape)


def _in_chunks(raw: np.ndarray, fn: Callable[[np.ndarray], np.ndarray], block_elems: int) -> np.ndarray:
    """Dequantise block rows a slice at a time so temporaries stay small for big tensors."""
    out = np.empty((raw.shape[0], block_elems), dtype=np.float32)
    step = max(1, (1 << 22) // block_elems)
    for i in range(0, raw.shape[0], step):
        out[i:i + step] = fn(raw[i:i + step])
    return out


def _gguf_fallback(data: np.ndarray, type_id: int, shape: tuple[int, ...]) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    qtype = GGMLQuantizationType(type_id)
    return np.asarray(gguf_dequantize(np.asarray(data), qtype), dtype=np.float32).reshape(shape)


def int4_groups(data: np.ndarray, type_id: int, shape: tuple[int, ...]) -> tuple[np.ndarray, ...] | None:
    """The 4-bit codes of a Q4_0 / Q4_1 / Q4_K tensor as groups of 32 with w = (q - 8) * scale + zero.

    Returns q (rows, cols) uint8 in 0..15, scale and zero (rows, cols / 32) float32 — exactly the
    file's weights, for int4 matmul kernels — or None for any other type.
    """
    if type_id not in (TYPE_Q4_0, TYPE_Q4_1, TYPE_Q4_K) or len(shape) != 2:
        return None
    rows, cols = shape
    block_bytes = _BLOCK_DEQUANT[type_id][1]
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1, block_bytes)
    if type_id == TYPE_Q4_K:
        nb = raw.shape[0]
        d, dmin = _f16(raw, 0), _f16(raw, 2)
        sc, mn = _k4_scales_mins(raw[:, 4:16])
        qs = raw[:, 16:144].reshape(nb, 4, 32)
        q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(nb * 8, 32)
        scale, low = (d * sc).reshape(-1), (-dmin * mn).reshape(-1)  # per sub-block of 32: w = scale*q + low
    else:
        q = np.concatenate([raw[:, 2 + 2 * (type_id == TYPE_Q4_1):] & 0x0F,
                            raw[:, 2 + 2 * (type_id == TYPE_Q4_1):] >> 4], axis=1)
        scale = _f16(raw, 0).reshape(-1)
        low = _f16(raw, 2).reshape(-1) if type_id == TYPE_Q4_1 else -8.0 * scale
    groups = cols // QK
    return (q.reshape(rows, cols).astype(np.uint8), scale.reshape(rows, groups),
            (low + 8.0 * scale).reshape(rows, groups))


def int8_groups(data: np.ndarray, type_id: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """The 8-bit codes of a Q8_0 matrix: q (rows, cols) int8 and scale (rows, cols / 32) float32 with
    w = q * scale — exactly the file's weights — or None for any other type."""
    if type_id != TYPE_Q8_0 or len(shape) != 2:
        return None
    rows, cols = shape
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1, _BLOCK_DEQUANT[TYPE_Q8_0][1])
    q = raw[:, 2:].view(np.int8).reshape(rows, cols)
    return q.copy(), _f16(raw, 0).reshape(rows, cols // QK)


def int8_as_int4_halves(q: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, ...]:
    """Q8_0 codes (int8 q, scale) as 4-bit groups (see int4_groups) of twice the rows: rows [:N] hold
    the high nibbles (w = 16 * scale * hi), rows [N:] the low ones (w = scale * lo), and the two
    halves' products sum to q * scale exactly, since q = 16 * hi + lo with hi in -8..7, lo in 0..15.

    Scales that differ by a power of two round alike (to bf16 in the int4 kernel), so the sum is
    still q times one rounded scale.
    """
    hi = (q.astype(np.int16) >> 4) + 8  # arithmetic shift: floor(q / 16) in -8..7, +8 -> code 0..15
    lo = q.astype(np.int16) & 0x0F
    codes = np.concatenate([hi, lo]).astype(np.uint8)
    scales = np.concatenate([16.0 * scale, scale]).astype(np.float32)
    zeros = np.concatenate([np.zeros_like(scale), 8.0 * scale]).astype(np.float32)  # (c - 8) * s + z = s * lo
    return codes, scales, zeros
