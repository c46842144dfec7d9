"""A stand-in gateway replica for multi-process tests: submits records through the real ledger (or
reserves/settles through the real Redis limiter) against a shared Redis, as a gateway process would.

  python -m tests.integration.observability.replica ledger --redis-url URL --data-dir DIR --name r1 --count 2000
  python -m tests.integration.observability.replica limits --redis-url URL --requests 200 --clock 1795000030
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

from observability.ledger import LedgerConfig, open_ledger
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitExceeded
from observability.limits_redis import RedisLimiter
from observability.usage import UsageRecord

T0 = 1_795_000_000.0
TEAMS = ("alpha", "beta", "gamma")
BACKENDS = ("openai", "local")


def replica_record(name: str, i: int) -> UsageRecord:
    """Deterministic record number i of replica `name` (tests recompute the expected totals from it)."""
    return UsageRecord(
        request_id=f"{name}-{i}", time=T0 + (i % 7200), team=TEAMS[i % len(TEAMS)], key_id=f"key-{i % 4}",
        model_alias="gpt-4o-mini" if i % 3 else "smollm2", backend=BACKENDS[i % 2], model="m", rule="r",
        status="ok" if i % 17 else "error", http_status=200 if i % 17 else 502, stream=bool(i % 2),
        prompt_tokens=10 + i % 50, completion_tokens=i % 7, estimated_prompt_tokens=10 + i % 50,
        estimated_completion_tokens=8, usage_source="upstream", cost_usd=(i % 5) * 0.000123,
        ttft_s=0.01 + (i % 10) * 0.001, itl_p50_s=None, itl_p95_s=None, itl_max_s=None, e2e_s=0.05 + (i % 9) * 0.01,
        error_type="" if i % 17 else "upstream_5xx", itl_gaps_s=tuple(0.004 for _ in range(max(i % 7 - 1, 0))),
    )


def run_ledger(args: argparse.Namespace) -> int:
    ledger = open_ledger(args.redis_url, Path(args.data_dir),
                         LedgerConfig(batch_size=64, flush_interval_s=0.02, retry_interval_s=0.1)).start()
    done = [0]
    lock = threading.Lock()

    def submit_part(part: int) -> None:
        for i in range(part, args.count, args.threads):
            ledger.submit(replica_record(args.name, i))
            with lock:
                done[0] += 1
                count = done[0]
            if args.progress_every and count % args.progress_every == 0:
                print(f"submitted {count}", flush=True)
            if args.pace_s:
                time.sleep(args.pace_s)

    threads = [threading.Thread(target=submit_part, args=(p,)) for p in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flushed = ledger.flush(args.flush_timeout_s, include_spill=True)
    ledger.close()
    stats = ledger.stats
    print(json.dumps({"flushed": flushed, "submitted": stats.submitted, "written": stats.written,
                      "spilled": stats.spilled, "replayed": stats.replayed}), flush=True)
    return 0 if flushed else 1


async def _limits(args: argparse.Namespace) -> dict[str, object]:
    config = LimitsConfig(teams={"alpha": TeamLimits(requests_per_minute=args.rpm, tokens_per_minute=args.tpm)})
    limiter = RedisLimiter.from_url(args.redis_url, config, clock=lambda: args.clock)
    refused: dict[str, int] = {}
    go = Path(args.go_file) if args.go_file else None
    while go is not None and not go.exists():  # both replicas start firing together
        await asyncio.sleep(0.005)

    async def one(i: int) -> int:
        try:
            held = await limiter.reserve(f"{args.name}-{i}", "alpha", "key-1", args.tokens, 0.0)
        except LimitExceeded as exc:
            refused[exc.limit] = refused.get(exc.limit, 0) + 1
            return 0
        await asyncio.sleep(0.001)  # the "upstream call"
        await limiter.settle(held, args.actual_tokens, 0.0)
        return 1

    accepted = sum(await asyncio.gather(*(one(i) for i in range(args.requests))))
    await limiter.aclose()
    # Round trips that failed open (e.g. a 2 s socket timeout on a starved loop): what explains an overshoot.
    state = limiter.health.state()
    failed_open = sum(state.outages.values()) + sum(state.script_errors.values())
    return {"accepted": accepted, "refused": refused, "failed_open": failed_open, "last_error": state.last_error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    led = sub.add_parser("ledger")
    led.add_argument("--redis-url", required=True)
    led.add_argument("--data-dir", required=True)
    led.add_argument("--name", required=True)
    led.add_argument("--count", type=int, default=1000)
    led.add_argument("--threads", type=int, default=4)
    led.add_argument("--pace-s", type=float, default=0.0)
    led.add_argument("--progress-every", type=int, default=0)
    led.add_argument("--flush-timeout-s", type=float, default=60.0)
    lim = sub.add_parser("limits")
    lim.add_argument("--redis-url", required=True)
    lim.add_argument("--name", default="r")
    lim.add_argument("--requests", type=int, default=100)
    lim.add_argument("--rpm", type=int, default=1_000_000)
    lim.add_argument("--tpm", type=int, default=1_000_000_000)
    lim.add_argument("--tokens", type=int, default=100)
    lim.add_argument("--actual-tokens", type=int, default=100)
    lim.add_argument("--clock", type=float, required=True)
    lim.add_argument("--go-file", default="")
    args = parser.parse_args(argv)
    if args.mode == "ledger":
        return run_ledger(args)
    print(json.dumps(asyncio.run(_limits(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
