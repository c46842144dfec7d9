"""What the gateway holds open around a Redis outage, second by second: the soak's mix at a steady rate,
Redis (one server, or one cluster node) killed for a while and started again, the gateway's fds by kind
(tests/support/proc_stats.py) and the client's in-flight count sampled every --sample-s; prints the
largest of each before, during and after the outage.

Run: .venv/bin/python -m bench.outage_fds [--redis cluster] [--rate 200] [--outage-s 5] [--out run.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.soak import one, plan, pool
from bench.soak_stack import Stack, proc_sample, start_stack
from tests.support.redis_server import RedisServer


async def run(stack: Stack, a: argparse.Namespace) -> list[dict[str, Any]]:
    node = stack.redis if isinstance(stack.redis, RedisServer) else stack.redis.nodes[0]
    rng, client = random.Random(a.seed), pool(stack)
    tasks: set[asyncio.Task[Any]] = set()
    samples: list[dict[str, Any]] = []
    phase = "before"
    start = time.monotonic()
    total = a.before_s + a.outage_s + a.after_s

    async def sampler() -> None:
        while True:
            sample = await asyncio.to_thread(proc_sample, stack.gateway_pid, stack.ports)
            samples.append({"t_s": round(time.monotonic() - start, 2), "phase": phase, "inflight": len(tasks),
                            "fds": sample["fds"], "fd_kinds": sample["fd_kinds"]})
            await asyncio.sleep(a.sample_s)

    async def outage() -> None:
        nonlocal phase
        await asyncio.sleep(a.before_s)
        await asyncio.to_thread(node.kill)
        phase = "outage"
        await asyncio.sleep(a.outage_s)
        if a.load_delay_us:  # a restart that stays LOADING for a while, as a large dataset does
            node.extra_args = ("--key-load-delay", str(a.load_delay_us))
        await asyncio.to_thread(node.start, 120.0)  # returns once it answers PING (loaded)
        phase = "after"

    helpers = [asyncio.create_task(sampler()), asyncio.create_task(outage())]
    i = 0
    try:
        while (now := time.monotonic() - start) < total:
            if i < now * a.rate and len(tasks) < a.max_inflight:
                task = asyncio.create_task(one(client, stack, i, plan(i, rng)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                continue
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
    finally:
        for helper in helpers:
            helper.cancel()
        client.close()
    return samples


def preload(node: RedisServer, keys: int) -> None:
    """`keys` small keys, written into the append-only file's RDB base, so a restart loads them."""
    client = redis.Redis.from_url(node.url)
    try:
        for first in range(0, keys, 10_000):
            pipe = client.pipeline(transaction=False)
            for k in range(first, min(first + 10_000, keys)):
                pipe.set(f"preload:{k}", b"x" * 64)
            pipe.execute()
        client.bgrewriteaof()
        while client.info("persistence")["aof_rewrite_in_progress"] or \
                client.info("persistence")["aof_rewrite_scheduled"]:
            time.sleep(0.1)
    finally:
        client.close()


def peaks(samples: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per phase: the most fds, in flight, and of each kind of fd seen in any one sample."""
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        top = out.setdefault(s["phase"], {})
        for key, value in [("fds", s["fds"]), ("inflight", s["inflight"]), *s["fd_kinds"].items()]:
            top[key] = max(top.get(key, 0), value)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", choices=("single", "cluster"), default="single")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--before-s", type=float, default=15.0)
    p.add_argument("--outage-s", type=float, default=5.0)
    p.add_argument("--after-s", type=float, default=15.0)
    p.add_argument("--sample-s", type=float, default=0.2)
    p.add_argument("--max-inflight", type=int, default=200)
    p.add_argument("--preload-keys", type=int, default=0, help="keys in Redis before the outage (one server)")
    p.add_argument("--load-delay-us", type=int, default=0,
                   help="key-load-delay at the restart: with --preload-keys, Redis answers LOADING for a while")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridgw-outage-fds-") as tmp:
        with start_stack(Path(tmp), 8, a.redis) as stack:
            if a.preload_keys:
                preload(stack.redis if isinstance(stack.redis, RedisServer) else stack.redis.nodes[0], a.preload_keys)
            samples = asyncio.run(run(stack, a))
            log = stack.log()
    tracebacks = log.count("Traceback")
    if a.out:
        a.out.with_suffix(".log").write_text(log)
    out = {"redis": a.redis, "rate_rps": a.rate, "outage_s": a.outage_s, "peaks": peaks(samples),
           "tracebacks_in_log": tracebacks}
    print(json.dumps(out, indent=1))
    if a.out:
        a.out.write_text(json.dumps({**out, "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
