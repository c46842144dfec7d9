"""SDPA on CPU for the engine's attention shapes: bf16 as the engine runs it vs fp32 upcast vs no mask.

SmolLM2-135M's layout (3 KV heads, 3 query heads each, head dim 64): a prefill chunk of T tokens is
(3, 1, 3T, 64) queries against L keys with an additive causal-with-offset mask; a decode is T = 1.
Variants run alternately, each timed `--reps` times; medians in ms (CPU time with `--clock cpu`, which
a shared machine disturbs less than wall time).

    .venv/bin/python bench/engine_sdpa_shapes.py [--threads 2] [--clock wall|cpu] [--shapes 64x3712,48x3712]
        [--variants bf16,bmm,native]

"native": the engine's chunk-attention kernel (local_engine/native/chunk_attention.h) on the same K/V laid
out as a paged cache of 16-token blocks in shuffled order, read in place (no gather, no mask tensor).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

KVH, G, D = 3, 3, 64
SHAPES = ((56, 256), (56, 1024), (56, 2048), (56, 4096), (64, 4096), (1, 512), (1, 4096))


def inputs(tq: int, length: int) -> tuple[torch.Tensor, ...]:
    q = torch.randn(KVH, 1, tq * G, D, dtype=torch.bfloat16)
    k, v = torch.randn(2, KVH, 1, length, D, dtype=torch.bfloat16)
    limit = (length - tq + torch.arange(tq)).repeat_interleave(G)  # the chunk is the context's last tq tokens
    visible = torch.arange(length)[None, :] <= limit[:, None]
    bias = torch.zeros(visible.shape, dtype=torch.bfloat16).masked_fill_(~visible, float("-inf"))[None, None]
    return q, k, v, bias


VARIANTS = {
    "bf16": lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b),
    "fp32": lambda q, k, v, b: F.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), attn_mask=b.float()).to(q.dtype),
    "no mask": lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v),  # a lower bound, not causal
    "bmm": lambda q, k, v, b: bmm_attention(q, k, v, b),
}


def bmm_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """As the engine's batched decode path does it: bf16 baddbmm scores, float32 softmax, bf16 bmm."""
    scores = torch.baddbmm(bias[0], q[:, 0], k[:, 0].transpose(1, 2), alpha=D ** -0.5)  # (KVH, G*T, L)
    return torch.bmm(torch.softmax(scores, -1, dtype=torch.float32).to(q.dtype), v[:, 0])[:, None]


def native_variant(threads: int):  # type: ignore[no-untyped-def]
    """The native kernel as a variant: (q, k, v, bias) -> the same output, via a paged copy of k / v made once
    per shape (cached by k's identity); None when the kernels are unavailable."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from local_engine.native.kernels import load_kernels

    kernels = load_kernels(threads=threads)
    if kernels is None:
        return None
    paged: dict[int, tuple[torch.Tensor, ...]] = {}

    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if id(k) not in paged:
            length, bs = k.shape[2], 16
            nb = -(-length // bs)
            table = torch.randperm(nb, generator=torch.Generator().manual_seed(0))
            cache = torch.zeros(2 * KVH, nb, bs, D, dtype=torch.bfloat16)
            flat = torch.cat([k[:, 0], v[:, 0]]).new_zeros(2 * KVH, nb * bs, D)
            flat[:, :length] = torch.cat([k[:, 0], v[:, 0]])
            cache[:, table] = flat.view(2 * KVH, nb, bs, D)
            tq = q.shape[2] // G
            rows = q[:, 0].view(KVH, tq, G, D).permute(1, 0, 2, 3).reshape(tq, KVH * G, D).contiguous()
            paged[id(k)] = (rows, cache, table[None].clone(), torch.tensor([length - tq], dtype=torch.int32),
                            torch.tensor([tq], dtype=torch.int32))
        rows, cache, table, start, n = paged[id(k)]
        return kernels.chunk_attention(rows, cache, table, start, n)
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--shapes", default=None, help="TxL,... (chunk tokens x keys); default: the built-in set")
    p.add_argument("--variants", default="bf16,fp32,no mask", help=f"of {', '.join(VARIANTS)}, native")
    args = p.parse_args()
    names = args.variants.split(",")
    variants = {name: VARIANTS[name] for name in names if name != "native"}
    if "native" in names:
        native = native_variant(args.threads)
        if native is None:
            print("native kernels unavailable: the native variant is left out")
        else:
            variants["native"] = native
    shapes = SHAPES if args.shapes is None else tuple(
        tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(","))
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"threads {args.threads}, {args.clock} clock, load {os.getloadavg()[0]:.1f}; ms median")
    for tq, length in shapes:
        x = inputs(tq, length)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for fn in variants.values():
            fn(*x)  # warm-up
        for rep in range(args.reps):
            for name in (list(variants) if rep % 2 else reversed(variants)):
                start = clock()
                variants[name](*x)
                times[name].append(clock() - start)
        med = {name: sorted(t)[len(t) // 2] * 1e3 for name, t in times.items()}
        ratio = f"  fp32/bf16 {med['fp32'] / med['bf16']:.2f}" if {"fp32", "bf16"} <= set(med) else ""
        if {"native", "bf16"} <= set(med):
            ratio += f"  native/bf16 {med['native'] / med['bf16']:.2f}"
        print(f"T={tq:3d} L={length:5d}  " + "  ".join(f"{n} {m:7.3f}" for n, m in med.items()) + ratio,
              f" per token {med[next(iter(med))] / tq * 1e3:.0f} us", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
