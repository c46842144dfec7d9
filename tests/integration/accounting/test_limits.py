"""Limits and budgets from the policy's teams, enforced through both gateway replicas at once:
requests/min and tokens/min exact under concurrency, a USD budget that refuses (429) and one that
re-routes to the cheap backend a `when: {over_budget: true}` rule names."""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import openai

from tests.integration.accounting.conftest import (
    BUDGET_USD_PER_DAY,
    CUTOFF_USD_PER_DAY,
    RPM_LIMIT,
    TPM_LIMIT,
    Stack,
    in_one_minute,
    wait_until,
)
from tests.integration.accounting.traffic import Outcome, Seen, burst, chat

# "team 'tpm' is over its tokens/min limit: 880 of 900 used, this request needs 35; retry after 40 s"
_REFUSAL = re.compile(r"over its (?P<unit>\S+) limit: \$?(?P<used>[\d.]+) of \$?(?P<limit>[\d.]+) used, "
                      r"this request needs \$?(?P<needs>[\d.]+)")


def _refusal(outcome: Outcome, unit: str) -> dict[str, float]:
    """The 429's numbers, after checking it is OpenAI-shaped, names the limit and says when to retry."""
    assert outcome.status == 429, outcome
    assert outcome.error["type"] == "rate_limit_error" and set(outcome.error) >= {"message", "param", "code"}
    assert outcome.retry_after is not None and int(outcome.retry_after) >= 1
    match = _REFUSAL.search(outcome.error["message"])
    assert match and match["unit"] == unit, outcome.error["message"]
    return {k: float(match[k]) for k in ("used", "limit", "needs")}


def test_requests_per_minute_exact_across_both_replicas(stack: Stack) -> None:
    async def run() -> Seen:
        async with stack.clients("rpm") as clients:
            return await burst(clients, 60, concurrency=30)

    seen = in_one_minute(run, longest_s=15.0)  # one burst: a few seconds at most
    assert seen.statuses() == {200: RPM_LIMIT, 429: 60 - RPM_LIMIT}
    for outcome in seen.outcomes:
        if outcome.status == 429:
            numbers = _refusal(outcome, "requests/min")
            assert numbers == {"used": RPM_LIMIT, "limit": RPM_LIMIT, "needs": 1}
            assert int(str(outcome.retry_after)) <= 60  # the window is a minute: it frees within one
    body = wait_until(lambda: (b := stack.team_usage("rpm"))["requests"] == 60 and b, "60 rpm records")
    assert body["statuses"] == {"ok": RPM_LIMIT, "rejected": 60 - RPM_LIMIT}


def _tokens(outcome: Outcome) -> int:
    return outcome.prompt_tokens + outcome.completion_tokens


def _settled_tokens(stack: Stack, team: str, seen: Seen) -> None:
    """Wait until the ledger has every accepted request (settlement runs beside it, off the path)."""
    if any(o.cut for o in seen.outcomes):  # a cut stream's tokens are the gateway's own count: wait for
        wait_until(lambda: stack.team_usage(team)["requests"] == len(seen.outcomes),  # every record instead
                   f"{team}'s records to settle")
        return
    want = seen.totals()
    wait_until(lambda: (b := stack.team_usage(team))["prompt_tokens"] == want["prompt_tokens"]
               and b["completion_tokens"] == want["completion_tokens"], f"{team}'s tokens to settle")


async def _probe_until_refused(stack: Stack, clients: list[Any], seen: Seen, unit: str,
                               used_of: Callable[[Seen], float], tries: int = 40) -> dict[str, float]:
    """Send one request at a time until one is refused while the limiter's count equals the actual
    use of everything accepted so far (its estimate-then-settle left nothing behind)."""
    team = next(t for t, k in stack.keys.items() if k == clients[0].api_key)
    for i in range(tries):
        client = clients[i % len(clients)]
        await asyncio.to_thread(_settled_tokens, stack, team, seen)
        outcome = await chat(client, 1000 + i, stream=i % 2 == 0, chunks=3)
        seen.outcomes.append(outcome)
        if outcome.status == 200:
            continue
        numbers = _refusal(outcome, unit)
        if numbers["used"] == round(used_of(seen), 4):
            return numbers
        await asyncio.sleep(0.1)  # a settle was still on its way; the next probe sees it
    raise AssertionError(f"no refusal matched the settled use within {tries} probes: {seen.outcomes[-3:]}")


def test_tokens_per_minute_exact_across_both_replicas(stack: Stack) -> None:
    def used(seen: Seen) -> float:
        return sum(_tokens(o) for o in seen.ok)

    async def run() -> tuple[Seen, dict[str, float]]:
        async with stack.clients("tpm") as clients:
            seen = await burst(clients, 80, concurrency=24)
            return seen, await _probe_until_refused(stack, clients, seen, "tokens/min", used)

    seen, last = in_one_minute(run)
    refused = [o for o in seen.outcomes if o.status != 200]
    assert refused and len(seen.ok) > 5, seen.statuses()
    for outcome in refused:
        assert _refusal(outcome, "tokens/min")["limit"] == TPM_LIMIT
    # The window holds exactly what the accepted requests used, across both replicas; it overshoots
    # the limit by at most one request (an estimate that came out short), and the last refusal was
    # right: that request's estimate did not fit.
    assert last["used"] == used(seen)
    assert used(seen) <= TPM_LIMIT + max(_tokens(o) for o in seen.ok)
    assert last["used"] + last["needs"] > TPM_LIMIT


def _cost(stack: Stack, team: str) -> float:
    return float(stack.team_usage(team)["cost_usd"])


def test_usd_budget_with_on_exceed_reject_refuses(stack: Stack) -> None:
    async def run() -> tuple[Seen, dict[str, float]]:
        async with stack.clients("broke") as clients:
            seen = await burst(clients, 30, concurrency=12)
            last = await _probe_until_refused(stack, clients, seen, "USD/day", lambda s: _cost(stack, "broke"))
            return seen, last

    seen, last = asyncio.run(run())
    refused = [o for o in seen.outcomes if o.status != 200]
    assert refused and seen.ok, seen.statuses()
    assert {o.backend for o in seen.ok} == {"hosted"}
    for outcome in refused:
        assert _refusal(outcome, "USD/day")["limit"] == BUDGET_USD_PER_DAY
    for outcome in (o for o in seen.outcomes if o.cut):  # a stream that crossed the budget mid-way
        assert "USD budget" in str(outcome.error.get("message")), outcome.error
    spent = _cost(stack, "broke")
    assert BUDGET_USD_PER_DAY - last["needs"] < spent
    assert last["used"] + last["needs"] > BUDGET_USD_PER_DAY
    one_request = max(_tokens(o) for o in seen.ok) * 2000 / 1e6  # priced at the dearer output rate
    assert spent <= BUDGET_USD_PER_DAY + one_request


def test_usd_budget_with_on_exceed_route_goes_to_the_cheap_backend(stack: Stack) -> None:
    async def run() -> tuple[Seen, list[str | None]]:
        async with stack.clients("thrifty") as clients:
            seen = await burst(clients, 30, concurrency=12)
            tail: list[str | None] = []
            # Then one at a time, the same request each time, every one seeing the settled spend of
            # all before it: hosted while its estimate fits the budget, then cheap for good.
            while len(tail) < 40 and tail[-5:] != ["cheap"] * 5:
                await asyncio.to_thread(_settled_tokens, stack, "thrifty", seen)
                outcome = await chat(clients[len(tail) % 2], 500, stream=len(tail) % 2 == 0)
                seen.outcomes.append(outcome)
                tail.append(outcome.backend)
        return seen, tail

    seen, tail = asyncio.run(run())
    assert seen.statuses() == {200: len(seen.outcomes)}, seen.outcomes[:3]  # never refused: routed instead
    backends = [o.backend for o in seen.outcomes]
    assert "hosted" in backends and "cheap" in backends
    assert tail[tail.index("cheap"):] == ["cheap"] * 5, tail  # once over budget it stays there
    assert {o.rule for o in seen.ok if o.backend == "cheap"} == {"over-budget-cheap"}
    _settled_tokens(stack, "thrifty", seen)
    body = stack.team_usage("thrifty")
    split = {b["backend"]: b for b in body["backends"]}
    assert {k: v["requests"] for k, v in split.items()} == {"hosted": backends.count("hosted"),
                                                            "cheap": backends.count("cheap")}
    assert split["cheap"]["cost_usd"] == 0 and split["hosted"]["cost_usd"] > 0
    one_request = max(_tokens(o) for o in seen.ok) * 2000 / 1e6
    assert split["hosted"]["cost_usd"] <= BUDGET_USD_PER_DAY + one_request


def test_a_stream_that_crosses_a_hard_budget_ends_with_an_error_frame(stack: Stack) -> None:
    """No max_tokens, so the reservation holds ~1 output token; the gateway cuts the 200-chunk stream
    once its output would spend past the budget, with one OpenAI-shaped error frame, and the
    settled spend stays within the budget plus a token or two."""
    async def run() -> tuple[int, Exception | None]:
        async with stack.clients("cutoff") as clients:
            received, error = 0, None
            try:
                stream = await clients[0].chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "tell me everything"}], stream=True,
                    user="fake:chunks=200")
                async for chunk in stream:
                    received += sum(1 for c in chunk.choices if c.delta.content)
            except openai.APIError as exc:
                error = exc
            return received, error

    received, error = asyncio.run(run())
    assert error is not None and "budget" in str(error), error
    assert 0 < received < 200
    wait_until(lambda: stack.team_usage("cutoff")["requests"] == 1, "the cut stream's record")
    spent = _cost(stack, "cutoff")
    usage = stack.team_usage("cutoff")
    assert 0 < spent <= CUTOFF_USD_PER_DAY + 2 * 2000 / 1e6, (received, usage)
