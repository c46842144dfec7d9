"""Exact per-team totals through two gateway replicas sharing one Redis: what the clients saw in
`usage` equals what GET /v1/usage and `hybridgw report` say, also across a Redis outage."""
from __future__ import annotations

import asyncio
from typing import Any

import openai

from tests.integration.accounting.conftest import ADMIN_KEY, Stack, wait_until
from tests.integration.accounting.traffic import Seen, burst

TOTAL_FIELDS = ("requests", "prompt_tokens", "completion_tokens")


def _totals(body: dict[str, Any]) -> dict[str, int]:
    return {name: int(body[name]) for name in TOTAL_FIELDS}


def _settled(stack: Stack, team: str, expected: dict[str, int], gateway: int = 0) -> dict[str, Any]:
    """The team's usage once the ledgers (written off the request path) have caught up with the
    clients; fails if it never matches, or if it goes past what the clients saw."""
    def caught_up() -> dict[str, Any] | None:
        body = stack.team_usage(team, gateway)
        assert body["requests"] <= expected["requests"], f"{team}: more requests counted than sent: {body}"
        return body if _totals(body) == expected else None

    return dict(wait_until(caught_up, f"{team}'s usage to reach {expected}"))


def test_concurrent_streams_through_two_replicas_add_up_exactly(stack: Stack) -> None:
    async def traffic() -> dict[str, Seen]:
        async with stack.clients("red") as red, stack.clients("blue") as blue:
            seen = await asyncio.gather(burst(red, 100, concurrency=24), burst(blue, 60, concurrency=24, start=7))
        return dict(zip(("red", "blue"), seen))

    seen = asyncio.run(traffic())
    for team, got in seen.items():
        assert got.statuses() == {200: len(got.outcomes)}, got.outcomes[:3]
        expected = got.totals()
        assert expected["completion_tokens"] > 0 and expected["prompt_tokens"] > 0
        body = _settled(stack, team, expected)
        assert body["team"] == team and body["cost_usd"] > 0  # hosted is priced
        assert {b["backend"]: b["requests"] for b in body["backends"]} == {"hosted": expected["requests"]}
        # The other replica reads the same Redis and says the same; so does the operator's CLI.
        assert _totals(stack.team_usage(team, 1)) == expected
        report = stack.report(team)
        assert report["team"] == team and _totals(report) == expected
        assert report["cost_usd"] == body["cost_usd"]
        # Latency histograms hold every request, and every gap between two streamed tokens.
        assert report["e2e"]["count"] == expected["requests"]
        assert report["itl"]["count"] == sum(o.content_chunks - 1 for o in got.ok if o.stream)
    everyone = stack.usage(ADMIN_KEY, since="1d").json()
    per_team = {t["team"]: t for t in everyone["teams"]}
    for team, got in seen.items():
        assert _totals(per_team[team]) == got.totals()


def _spilled_files(stack: Stack) -> list[str]:
    return [p.name for g in stack.gateways for p in (g.data_dir / "spill").glob("spill-*.jsonl")]


def _sum_totals(*parts: Seen) -> dict[str, int]:
    return {k: sum(p.totals()[k] for p in parts) for k in TOTAL_FIELDS}


def test_redis_killed_mid_run_loses_and_double_counts_nothing(stack: Stack) -> None:
    async def phase(count: int, start: int, team: str = "outage") -> Seen:
        async with stack.clients(team) as clients:
            return await burst(clients, count, concurrency=8, start=start)

    before = asyncio.run(phase(30, 0))
    stack.redis.kill()  # SIGKILL: the gateways keep serving; their ledgers spill to the data dirs
    try:
        during = asyncio.run(phase(40, 30))
        # A team with limits too: while they cannot be checked, requests are let through.
        capped = asyncio.run(phase(10, 0, "capped"))
        assert during.statuses() == {200: 40} and capped.statuses() == {200: 10}, during.outcomes[:3]
        down = stack.usage(stack.keys["outage"])
        assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
        wait_until(lambda: len(_spilled_files(stack)) > 0, "a spill file while Redis is down")
    finally:
        stack.redis.start()  # same port, same append-only file
    after = asyncio.run(phase(30, 70))
    assert before.statuses() == after.statuses() == {200: 30}
    expected = _sum_totals(before, during, after)
    _settled(stack, "outage", expected)
    _settled(stack, "capped", capped.totals())
    wait_until(lambda: not _spilled_files(stack), "the spill files to be replayed and removed")
    assert _totals(stack.report("outage")) == expected
    for gateway in stack.gateways:
        assert "usage store unavailable" in gateway.log()
    assert "limits not enforced, Redis unreachable" in "".join(g.log() for g in stack.gateways)


def test_a_replica_restarted_during_an_outage_replays_what_it_spilled(stack: Stack) -> None:
    replica = stack.gateways[1]

    async def burst_b(count: int, start: int) -> Seen:
        async with stack.clients("restart") as clients:
            return await burst(clients[1:], count, concurrency=8, start=start)

    first = asyncio.run(burst_b(24, 0))
    stack.redis.kill()
    try:
        during = asyncio.run(burst_b(24, 24))
        assert replica.restart() == 0  # shut down while Redis is away: what it held went to its spill file
        assert list((replica.data_dir / "spill").glob("spill-*.jsonl"))
    finally:
        stack.redis.start()
    last = asyncio.run(burst_b(12, 48))  # the new process serves at once, and replays the old file
    assert first.statuses() == during.statuses() == {200: 24} and last.statuses() == {200: 12}
    expected = _sum_totals(first, during, last)
    _settled(stack, "restart", expected)
    wait_until(lambda: not _spilled_files(stack), "the old process's spill file to be replayed and removed")
    assert _totals(stack.team_usage("restart", 1)) == expected


def test_every_request_is_one_record_whether_served_failed_or_abandoned(stack: Stack) -> None:
    async def abandon(client: openai.AsyncOpenAI) -> int:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "go on"}], stream=True,
            user="fake:chunks=60;delay_ms=50")
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 2:
                break  # the client walks away mid-stream
        await stream.close()
        return seen

    async def traffic() -> tuple[Seen, Seen, list[int]]:
        async with stack.clients("mixed") as clients:
            ok, failed, abandoned = await asyncio.gather(
                burst(clients, 12, concurrency=6),
                burst(clients, 6, concurrency=6, model="broken"),
                asyncio.gather(*(abandon(clients[i % 2]) for i in range(6))))
        return ok, failed, list(abandoned)

    ok, failed, abandoned = asyncio.run(traffic())
    assert ok.statuses() == {200: 12} and abandoned == [2] * 6
    # 502 from the upstream's 500s, then 503 once the broken backend's circuit breaker opened
    assert {o.status for o in failed.outcomes} <= {502, 503} and len(failed.outcomes) == 6
    body = wait_until(lambda: (b := stack.team_usage("mixed"))["requests"] == 24 and b, "24 records of team mixed")
    assert body["statuses"] == {"ok": 12, "error": 6, "aborted": 6}
    assert body["completion_tokens"] >= ok.totals()["completion_tokens"] + 6  # each abandoned stream had output
