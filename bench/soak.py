"""Soak: one gateway for a long time at about half of its saturation, to show it does not grow.

A mix of streamed and non-streamed requests, 5% of them cut by the client (mid-stream, or before a
slow non-streamed answer), 1% failing upstream (a 500, or a stream dropped after two chunks), and the
Redis the gateway uses (REDIS_URL: usage, limits, keys) killed and restarted in the middle. The
gateway's RSS and open file descriptors are read from /proc over time; it checks them at the end
against their level after warm-up (bar: at most 5% more; both read idle, nothing in flight for a few
seconds, fds by kind beside), every request's usage record present exactly once (matched by the client's x-request-id, and by x-hybridgw-request-id where the client saw it), and
no error but the injected ones. Exit status 1 when a check fails.

Run: .venv/bin/python -m bench.soak [--minutes 60] [--rate RPS] [--redis single|cluster] [--out soak.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.soak_stack import Stack, heap_trim, proc_sample, start_stack, threads
from observability.bench.client import Target
from observability.bench.exchange import BenchExchange, BenchPool
from observability.redis_store import RedisStore
from tests.support.redis_server import RedisClusterServers

NORMAL_STREAM = "fake:chunks=16;delay_ms=2"
SLOW_BODY = "fake:ttft_ms=400"  # a non-streamed answer the client gives up on before it comes
TIMEOUT_S = 60.0  # one request, whole


def plan(i: int, rng: random.Random) -> str:
    """What request i does: normal-stream, normal, cut-stream, cut, error-500, error-drop."""
    roll = rng.random()
    if roll < 0.05:
        return "cut-stream" if i % 2 else "cut"
    if roll < 0.06:
        return "error-drop" if i % 2 else "error-500"
    return "normal-stream" if i % 2 else "normal"


async def one(client: BenchPool, stack: Stack, i: int, kind: str, prefix: str = "soak") -> dict[str, Any]:
    """Send request i as `kind`; returns what the client saw (status, the gateway's request id, and
    whether the request left the client at all: one whose connection could not be made did not)."""
    team = stack.teams[i % len(stack.teams)]
    model = {"error-500": "err500", "error-drop": "errdrop"}.get(kind, "m")
    stream = kind in ("normal-stream", "cut-stream", "error-drop")
    body = {"model": model, "messages": [{"role": "user", "content": f"soak request {i}"}], "stream": stream,
            "max_tokens": 16, "user": SLOW_BODY if kind == "cut" else NORMAL_STREAM}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.keys[team]}",
               "X-Request-Id": f"{prefix}-{i}"}
    seen: dict[str, Any] = {"i": i, "kind": kind, "team": team, "status": None, "gateway_id": None, "error": "",
                            "sent": False}
    exchange = None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            exchange = await client.send(orjson.dumps(body), headers)
            seen["sent"] = True
            if kind == "cut":
                return await _cut(exchange, seen)
            seen["status"] = await exchange.head()
            seen["gateway_id"] = exchange.headers.get("x-hybridgw-request-id")
            async for _ in exchange.body():
                if kind == "cut-stream":
                    break  # closing below, before the body's end, cuts the connection mid-stream
    except Exception as exc:  # noqa: BLE001 - any failure is what the client saw, classified by the caller
        seen["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if exchange is not None:
            exchange.close()
    return seen


async def _cut(exchange: BenchExchange, seen: dict[str, Any]) -> dict[str, Any]:
    """Close the connection 50 ms after the whole request has left (the slow answer is not there yet)."""
    async def answer() -> None:
        seen["status"] = await exchange.head()
        seen["gateway_id"] = exchange.headers.get("x-hybridgw-request-id")
        await exchange.read()

    task = asyncio.ensure_future(answer())
    await asyncio.wait([task], timeout=0.05)
    if task.done():
        task.result()  # answered before the cut: its record says ok (or its failure is raised)
        return seen
    task.cancel()  # the caller closes the connection: the body is not complete
    await asyncio.gather(task, return_exceptions=True)
    seen["status"] = "cut"
    return seen


async def calibrate(stack: Stack, seconds: float, concurrency: int = 32) -> float:
    """Requests/s of the normal mix at `concurrency` in a closed loop: the saturation estimate."""
    done = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.monotonic() < end:
            await one(client, stack, i, "normal-stream" if i % 2 else "normal", prefix="calibrate")
            done += 1
            i += concurrency

    client = pool(stack)
    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        client.close()
    return done / seconds


def pool(stack: Stack) -> BenchPool:
    """The soak's client: raw keep-alive connections to the gateway (observability/bench's, cheap per
    request, so it does not give way before the gateway). Idle ones expire before uvicorn's 5 s keep-alive
    timeout ends them: a request sent on one the server is closing at that moment never reaches it."""
    return BenchPool(Target.parse(stack.url, "chat"), idle_expiry_s=2.0)


async def soak(stack: Stack, a: argparse.Namespace, rate: float
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Run the load; returns each request's outcome, the samples under load, and the two quiet samples
    (after warm-up and at the end: nothing in flight for --settle-s, so both see the same idle gateway)."""
    duration = a.minutes * 60.0
    rng = random.Random(a.seed)
    results: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic()
    client = pool(stack)
    try:

        async def run_one(i: int, kind: str) -> None:
            results.append(await one(client, stack, i, kind))

        async def sampler() -> None:
            # each sample is also appended to <out>.samples.jsonl as it is taken: an hour's run that is cut
            # short (a busy host, a deadline) still leaves its curve behind
            progress = a.out.with_suffix(".samples.jsonl") if a.out else None
            while True:
                samples.append({"t_s": round(time.monotonic() - start, 1), "inflight": len(tasks),
                                "done": len(results), **proc_sample(stack.gateway_pid, stack.ports),
                                "threads": threads(stack.gateway_pid)})
                if progress:
                    with progress.open("a") as f:
                        f.write(json.dumps(samples[-1]) + "\n")
                await asyncio.sleep(a.sample_s)

        async def outage() -> None:
            for k in range(a.outages):  # evenly spread over the run; one: in the middle
                await asyncio.sleep(start + duration * (k + 1) / (a.outages + 1) - time.monotonic())
                await asyncio.to_thread(stack.restart_redis, a.outage_s)
                print(f"redis restarted at {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

        async def quiet(name: str) -> float:
            paused = time.monotonic()
            await asyncio.gather(*tasks)
            await asyncio.sleep(a.settle_s)
            quiets[name] = {"t_s": round(time.monotonic() - start, 1), **proc_sample(stack.gateway_pid, stack.ports),
                            "redis_clients": await asyncio.to_thread(redis_clients, stack),
                            "threads": threads(stack.gateway_pid), "heap_trim": await asyncio.to_thread(heap_trim, stack)}
            return time.monotonic() - paused

        quiets: dict[str, dict[str, Any]] = {}
        helpers = [asyncio.create_task(sampler()), asyncio.create_task(outage())]
        i, skipped = 0, 0.0  # the schedule skips the pause after warm-up (no burst to catch up)
        while (now := time.monotonic() - start - skipped) < duration:
            if not quiets and now >= duration * a.warmup_frac:
                skipped += await quiet("after_warmup")
                continue
            if i < now * rate and len(tasks) < a.max_inflight:  # open loop, bounded in flight
                task = asyncio.create_task(run_one(i, plan(i, rng)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                continue
            await asyncio.sleep(min(1.0 / rate, 0.01))
        for helper in helpers:
            helper.cancel()
        await quiet("end")
    finally:
        client.close()
    return results, samples, quiets


def redis_clients(stack: Stack) -> dict[str, int]:
    """Connections on the soak's Redis (all nodes) by CLIENT SETNAME: which gateway client holds them."""
    nodes = stack.redis.nodes if isinstance(stack.redis, RedisClusterServers) else [stack.redis]
    names: Counter[str] = Counter()
    for node in nodes:
        asking = redis.Redis.from_url(node.url, client_name="soak-check")
        try:
            names.update(c.get("name") or "(unnamed)" for c in asking.client_list())
        except redis.RedisError as exc:
            names[f"error: {type(exc).__name__}"] += 1
        finally:
            asking.close()
    names["soak-check"] -= len(nodes)
    return {name: n for name, n in sorted(names.items()) if n}


def read_records(url: str, teams: list[str], since: float) -> list[Any]:
    store = RedisStore.from_url(url)
    try:
        return [r for team in teams for r in store.records(team, since, time.time() + 60, limit=10_000_000)]
    finally:
        store.close()


def check_records(stack: Stack, results: list[dict[str, Any]], since: float, wait_s: float) -> dict[str, Any]:
    """Wait (bounded) for every request's record; then count missing, doubled, and unexpected errors."""
    wanted = {f"soak-{r['i']}" for r in results if r["sent"]}
    deadline = time.monotonic() + wait_s
    while True:
        records = [r for r in read_records(stack.redis_url, stack.teams, since)
                   if r.client_request_id.startswith("soak-")]
        counts = Counter(r.client_request_id for r in records)
        if wanted <= set(counts) or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    by_id = {r.client_request_id: r for r in records}
    unexpected = []
    for seen in results:
        rec = by_id.get(f"soak-{seen['i']}")
        normal = seen["kind"].startswith("normal")
        if normal and (seen["status"] != 200 or seen["error"] or rec is None or rec.status != "ok"):
            unexpected.append({**seen, "record_status": rec.status if rec else None})
        elif rec is not None and seen["gateway_id"] and rec.request_id != seen["gateway_id"]:
            unexpected.append({**seen, "record_id": rec.request_id})
    missing = [r for r in results if r["sent"] and f"soak-{r['i']}" not in counts]
    return {"requests": len(results), "never_sent": sum(1 for r in results if not r["sent"]),
            "records": sum(n for rid, n in counts.items() if rid in wanted),
            "missing": len(missing), "missing_kinds": dict(Counter(r["kind"] for r in missing)),
            "missing_sample": missing[:5], "duplicated": sum(1 for n in counts.values() if n > 1),
            "kinds": dict(Counter(r["kind"] for r in results)),
            "record_statuses": dict(Counter(r.status for r in records)),
            "unexpected_errors": len(unexpected), "unexpected_sample": unexpected[:5]}


def growth(quiets: dict[str, dict[str, Any]], field: str) -> dict[str, Any]:
    """The field at the quiet sample after warm-up and at the end, and the change (the bar), with the
    fds by kind beside, so a change can be told apart (clients, upstream or Redis pools, files, ...)."""
    base, last = quiets["after_warmup"][field], quiets["end"][field]
    out = {"after_warmup": base, "end": last, "change_pct": round(100 * (last - base) / base, 2)}
    if field == "fds":
        out["kinds_after_warmup"], out["kinds_end"] = quiets["after_warmup"]["fd_kinds"], quiets["end"]["fd_kinds"]
        out["redis_clients_after_warmup"] = quiets["after_warmup"]["redis_clients"]
        out["redis_clients_end"] = quiets["end"]["redis_clients"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=0.0, help="requests/s (default: half of a calibrated saturation)")
    p.add_argument("--calibrate-s", type=float, default=15.0)
    p.add_argument("--warmup-frac", type=float, default=0.1, help="share of the run before the first quiet sample")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--settle-s", type=float, default=12.0,
                   help="idle time before each of the two quiet samples (the Redis pools trim to their floor within 10 s)")
    p.add_argument("--outage-s", type=float, default=5.0, help="how long Redis stays down each time")
    p.add_argument("--outages", type=int, default=1, help="Redis restarts, spread evenly (1: in the middle)")
    p.add_argument("--redis", choices=("single", "cluster"), default="single")
    p.add_argument("--teams", type=int, default=8, help="records spread over teams (each stream keeps 100,000)")
    # below the gateway's 256 connections per client address: a cut connection may linger there a moment
    p.add_argument("--max-inflight", type=int, default=200)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridgw-soak-") as tmp, start_stack(Path(tmp), a.teams, a.redis) as stack:
        since = time.time() - 1
        saturation = asyncio.run(calibrate(stack, a.calibrate_s)) if not a.rate else None
        rate = a.rate or (saturation or 0) / 2
        print(f"soak: {a.minutes} min at {rate:.0f} req/s (saturation ~{saturation or 0:.0f})", file=sys.stderr)
        results, samples, quiets = asyncio.run(soak(stack, a, rate))
        records = check_records(stack, results, since, wait_s=180)
        out = {"minutes": a.minutes, "rate_rps": round(rate, 1), "saturation_rps": saturation, "redis": a.redis,
               "rss_kb": growth(quiets, "rss_kb"), "fds": growth(quiets, "fds"),
               "threads": {name: q["threads"] for name, q in quiets.items()},
               "heap_trim_end": quiets["end"]["heap_trim"],
               **records, "tracebacks_in_log": stack.log().count("Traceback"), "samples": samples}
    # growth is the failure; a level that falls back (fewer connections open at that moment) is not
    ok = (out["rss_kb"]["change_pct"] <= 5 and out["fds"]["change_pct"] <= 5 and not out["missing"]
          and not out["duplicated"] and not out["unexpected_errors"] and not out["tracebacks_in_log"])
    out["pass"] = ok
    text = json.dumps(out, indent=1)
    if a.out:
        a.out.write_text(text)
    print(json.dumps({k: v for k, v in out.items() if k != "samples"}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
