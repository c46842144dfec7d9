"""The Limiter of one worker of `hybridgw serve --workers N` without Redis: the windows' math runs
here (plan_charges, as in every limiter), the counts live in the supervisor (counts_server.py), one
unix-socket round trip per reserve or check and none for a settle. Exact across the workers: every
charge is checked and added in one step by the one process that holds the counts. If the supervisor
cannot be reached it fails open with a logged warning, as the Redis limiter does."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import orjson

from observability.counts_server import MAX_LINE
from observability.limiter_health import LimiterHealth, LimiterState
from observability.limits import (
    charged_reservation,
    exceeded,
    plan_charges,
    raise_if_exceeded,
    request_charges,
    settle_deltas,
    usage_from,
)
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitUsage, Reservation

log = logging.getLogger(__name__)


class CountsUnavailable(Exception):
    """The supervisor's counts server did not answer."""


class CountsClient:
    """One connection to the counts server; requests are pipelined, answers come back in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> asyncio.StreamWriter:
        if self._writer is not None:  # the common case: no lock to take
            return self._writer
        async with self._connecting:
            if self._writer is None:
                try:
                    reader, self._writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_LINE)
                except OSError as exc:
                    raise CountsUnavailable(f"counts server {self.path}: {exc}") from exc
                self._reader_task = asyncio.create_task(self._read(reader, self._writer))
            return self._writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                future = self._waiting.popleft()
                if not future.done():
                    future.set_result(orjson.loads(line))
        except (ConnectionError, IndexError, ValueError):
            pass
        finally:
            self._lost(writer)

    def _lost(self, writer: asyncio.StreamWriter) -> None:
        if self._writer is writer:
            self._writer = None
        waiting, self._waiting = self._waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(CountsUnavailable("the counts server closed the connection"))
        writer.close()

    async def call(self, request: list[Any]) -> Any:
        answer = await self.ask(request)
        return _checked(await answer)

    async def ask(self, request: list[Any]) -> asyncio.Future[Any]:
        """Send `request`; the future its answer will complete (for a caller that must see the answer
        even when it is cancelled while waiting: a charge made for it must be given back)."""
        writer = await self._connect()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)  # before the write: the answer cannot overtake its future
        writer.write(orjson.dumps(request) + b"\n")
        return future

    async def send(self, request: list[Any]) -> None:
        """A request without an answer (settle)."""
        writer = await self._connect()
        writer.write(orjson.dumps(request) + b"\n")

    def send_nowait(self, request: list[Any]) -> None:
        """send() on the open connection (none open: the connection that answered is gone, and
        what it was told to give back is lost with it)."""
        if self._writer is not None:
            self._writer.write(orjson.dumps(request) + b"\n")

    async def aclose(self) -> None:
        if self._writer is not None:
            self._lost(self._writer)
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)


def _checked(reply: Any) -> Any:
    if isinstance(reply, dict) and "error" in reply:
        raise CountsUnavailable(str(reply["error"]))
    return reply


def _give_back_if_charged(client: CountsClient, deltas: list[tuple[str, int]]) -> Any:
    """A done-callback for a reservation whose caller went away (a client disconnect) while it was
    asked: once charged, its charge goes back, as if never made (the in-process limiter has no such
    window: its reserve does not wait)."""
    def done(future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None and isinstance(future.result(), list) \
                and future.result()[0] is None:
            client.send_nowait(["a", deltas])

    return done


class SharedLimiter:
    def __init__(self, client: CountsClient, config: LimitsConfig, *, clock: Callable[[], float] = time.time,
                 warn_interval_s: float = 30.0) -> None:
        self.config = config
        self._client = client
        self._clock = clock
        self._warn_interval_s = warn_interval_s
        self._last_warning = 0.0
        self.health = LimiterHealth(outage_kind="counts_unreachable")

    def state(self) -> LimiterState:
        return self.health.state()

    def _fail_open(self, exc: Exception, script: str) -> None:
        self.health.failed(script, exc, outage=True)
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval_s:
            self._last_warning = now
            log.warning("limits: the supervisor's counts are unreachable (%s); not enforcing limits", exc)

    async def reserve(self, request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                      *, unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> Reservation:
        now = self._clock()
        charges = plan_charges(self.config, team, key_id, tokens, cost_usd, now, unchecked, key_limits)
        if not charges:
            return Reservation(request_id, team, key_id, tokens, cost_usd)
        try:
            answer = await self._client.ask(["c", [[c.key, c.amount, c.limit, c.window_end] for c in charges]])
            try:
                bad, used = _checked(await asyncio.shield(answer))
            except asyncio.CancelledError:
                answer.add_done_callback(_give_back_if_charged(self._client, [(c.key, -c.amount) for c in charges]))
                raise
        except CountsUnavailable as exc:
            self._fail_open(exc, "reserve")
            return Reservation(request_id, team, key_id, tokens, cost_usd)
        self.health.ok()
        if bad is not None:
            raise exceeded(charges[bad], used[bad], now)
        return charged_reservation(request_id, team, key_id, tokens, cost_usd, charges, used, now)

    async def check_requests(self, team: str, key_id: str, *, key_limits: TeamLimits | None = None) -> None:
        now = self._clock()
        charges = request_charges(self.config, team, key_id, now, key_limits)
        if not charges:
            return
        try:
            used = await self._client.call(["r", [c.key for c in charges]])
        except CountsUnavailable as exc:
            self._fail_open(exc, "check_requests")
            return
        self.health.ok()
        raise_if_exceeded(charges, used, now)

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        deltas = settle_deltas(reservation, tokens, cost_usd)
        if deltas:
            try:
                await self._client.send(["a", deltas])
            except CountsUnavailable as exc:
                self._fail_open(exc, "settle")

    async def usage(self, team: str, key_id: str, key_limits: TeamLimits | None = None) -> list[LimitUsage]:
        """What each of the team's and key's windows has used now, across the workers."""
        charges = plan_charges(self.config, team, key_id, 0, 0.0, self._clock(), key_limits=key_limits)
        if not charges:
            return []
        try:
            used = await self._client.call(["r", [c.key for c in charges]])
        except CountsUnavailable as exc:
            self._fail_open(exc, "usage")
            return []
        self.health.ok()
        return usage_from(charges, used)

    def reconfigure(self, config: LimitsConfig) -> None:
        self.config = config

    async def aclose(self) -> None:
        await self._client.aclose()
