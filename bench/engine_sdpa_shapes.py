"""SDPA on CPU for the engine's attention shapes: bf16 as the engine runs it vs fp32 upcast vs no mask.

SmolLM2-135M's layout (3 KV heads, 3 query heads each, head dim 64): a prefill chunk of T tokens is
(3, 1, 3T, 64) queries against L keys with an additive causal-with-offset mask; a decode is T = 1.
Variants run alternately, each timed `--reps` times; medians in ms (CPU time with `--clock cpu`, which
a shared machine disturbs less than wall time).

    .venv/bin/python bench/engine_sdpa_shapes.py [--threads 2] [--clock wall|cpu] [--shapes 64x3712,48x3712]
        [--variants bf16,bmm]
"""
from __future__ import annotations

import argparse
import os
import time

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--shapes", default=None, help="TxL,... (chunk tokens x keys); default: the built-in set")
    p.add_argument("--variants", default="bf16,fp32,no mask", help=f"of {', '.join(VARIANTS)}")
    args = p.parse_args()
    variants = {name: VARIANTS[name] for name in args.variants.split(",")}
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
        print(f"T={tq:3d} L={length:5d}  " + "  ".join(f"{n} {m:7.3f}" for n, m in med.items()) + ratio,
              f" per token {med[next(iter(med))] / tq * 1e3:.0f} us", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
