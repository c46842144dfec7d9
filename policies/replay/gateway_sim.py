"""What the gateway knows while replaying: polled engine snapshots, its KV holds and in-flight counts
per engine (as `policies.holds` keeps them), and hosted backends' rate limits and response times."""
from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from policies.health import HealthBook
from policies.live import EngineSnapshot, InFlight, LiveState
from policies.perf_model import Z95, HostedModel
from policies.replay.engine_sim import SimEngine
from policies.replay.poll_clock import PollClock
from policies.replay.stratified import StratifiedNormal

_NONE: frozenset[str] = frozenset()  # no engine is unreachable in a replay
_EMPTY: Mapping = MappingProxyType({})  # no team fairness, prefix index or TTFT scale in a replay


class HostedSim:
    """A hosted backend: a requests-per-minute limit (429 beyond it) and seeded response times."""

    def __init__(self, model: HostedModel, seed: int) -> None:
        self.model = model
        self._rng = random.Random(seed)
        self._recent: deque[float] = deque()
        # TTFT draws spread over the model's distribution in every stretch (stratified.py): seeded pseudo-random
        # ones gave every replay the same sample, whose p95 was 9% under the model's (docs/benchmarks.md, #13).
        self._ttft_z = StratifiedNormal(self._rng).next
        self._gauss = self._rng.gauss
        # HostedModel.ttft / tokens_per_s with their logarithms computed once: the same expressions
        # (z * log / Z95, in that order), so the same floats (tests/unit/policies/replay/test_hosted_sim.py).
        self._ttft_log = math.log(model.ttft_p95_s / model.ttft_p50_s)
        self._speed_log = math.log(model.tokens_per_s_p50 / model.tokens_per_s_p05)

    def admit(self, now: float) -> bool:
        limit = self.model.requests_per_minute
        if not limit:
            return True
        while self._recent and self._recent[0] <= now - 60.0:
            self._recent.popleft()
        if len(self._recent) >= limit:
            return False
        self._recent.append(now)
        return True

    def timings(self, output_tokens: int) -> tuple[float, float]:
        """(TTFT, E2E) of one response."""
        m = self.model
        ttft = m.ttft_p50_s * math.exp(self._ttft_z() * self._ttft_log / Z95)
        speed = m.tokens_per_s_p50 * math.exp(self._gauss(0.0, 1.0) * self._speed_log / Z95)
        return ttft, ttft + max(0, output_tokens - 1) / speed


@dataclass
class _EngineBook:
    """One engine as the gateway sees it between two polls."""

    snapshot: EngineSnapshot | None = None
    reserved: int = 0  # blocks held by this gateway's in-flight requests
    num: int = 0
    started_since: int = 0
    ended_since: int = 0
    tokens_since: int = 0  # the prompt tokens of those started since (InFlight.prompt_tokens_since)
    first_since: float = 0.0  # when the first of those started (InFlight.first_started_since)
    released_since: int = 0  # blocks of requests started before the snapshot and ended after it
    start_time: dict[int, float] = field(default_factory=dict)
    prompt: dict[int, int] = field(default_factory=dict)  # request → its prompt tokens, while in flight
    # Clocked polls taken and not yet seen by the gateway, (seen from, taken, snapshot); the ends since the
    # oldest of them (end, start, blocks), to count what ended after each was taken when it is seen.
    pending: list[tuple[float, float, EngineSnapshot]] = field(default_factory=list)
    ends: list[tuple[float, float, int]] = field(default_factory=list)

    def first_after(self, taken: float) -> float:
        """The first start after `taken` of the requests in flight (0.0: none)."""
        return min((t for t in self.start_time.values() if t > taken), default=0.0)


class GatewayView:
    """Builds the LiveState decide() reads, exactly as LiveBook.live_state() would.

    Polls: without `clocks`, an engine is polled at the first arrival `poll_s` after its last poll (its state
    is then fresh at that arrival). With `clocks` (engine → its PollClock), as the real poller does: on a
    clock of its own, whatever arrives, each arrival seeing the last poll it has seen; the replay takes each
    poll (take()) at the first event after its time, from the engine stepped to it, and the gateway sees
    it (install()) from when its clock says."""

    def __init__(self, engines: dict[str, SimEngine], health: HealthBook, poll_s: float, stale_s: float,
                 clocks: Mapping[str, PollClock] | None = None) -> None:
        self.engines = engines
        self.health = health
        self.poll_s, self.stale_s = poll_s, stale_s
        self.books = {name: _EngineBook() for name in engines}
        self.slo_out: frozenset[tuple[str, float]] = frozenset()  # slo_cost's hysteresis, as the router keeps it
        self._parts: tuple[dict, dict, dict, dict] | None = None  # the LiveState's mappings until one changes
        self.polled_until = float("-inf")  # before this no engine's poll is due (most requests: skip the loop)
        self.num_in_flight = 0  # this gateway's requests on all engines, not yet seen to end
        self.clocks = dict(clocks) if clocks else None
        if self.clocks:
            self.polled_until = min(c.next for c in self.clocks.values())

    def poll_due(self, now: float) -> bool:
        if now < self.polled_until:
            return False
        if self.clocks:
            return True
        return any(b.snapshot is None or now - b.snapshot.taken_at >= self.poll_s for b in self.books.values())

    def polls_due(self, now: float) -> list[tuple[str, float, float]]:
        """(engine, taken, seen from) of each clocked poll taken by `now` and not yet taken here, in order."""
        assert self.clocks is not None
        return [(name, taken, seen) for name, clock in self.clocks.items() if clock.next <= now
                for taken, seen in clock.pop_due(now)]

    def take(self, name: str, taken: float, seen: float) -> None:
        """Take `name`'s clocked poll at `taken` (the engine stepped to it); the gateway sees it from `seen`."""
        self.books[name].pending.append((seen, taken, self.engines[name].snapshot(taken)))

    def install(self, now: float) -> None:
        """Each engine's latest poll seen by `now` becomes its state, counted against what this gateway
        sent since it was taken and what ended since; then when the next poll is due or seen."""
        assert self.clocks is not None
        for book in self.books.values():
            if not any(p[0] <= now for p in book.pending):
                continue
            _, taken, book.snapshot = max((p for p in book.pending if p[0] <= now), key=lambda p: p[1])
            book.pending = [p for p in book.pending if p[0] > now and p[1] > taken]
            book.started_since = sum(1 for t in book.start_time.values() if t > taken)
            book.tokens_since = sum(book.prompt[r] for r, t in book.start_time.items() if t > taken)
            book.first_since = book.first_after(taken)
            since = [blocks for end, start, blocks in book.ends if start <= taken < end]
            book.ended_since, book.released_since = len(since), sum(since)
            oldest = min((p[1] for p in book.pending), default=math.inf)
            book.ends = [e for e in book.ends if e[0] > oldest]
            self._parts = None
        self.polled_until = min([c.next for c in self.clocks.values()]
                                + [p[0] for b in self.books.values() for p in b.pending])

    def live(self, now: float) -> LiveState:
        if now >= self.polled_until and self.clocks is None:
            for name, book in self.books.items():
                if book.snapshot is None or now - book.snapshot.taken_at >= self.poll_s:
                    book.snapshot = self.engines[name].snapshot(now)
                    book.started_since = book.ended_since = book.released_since = book.tokens_since = 0
                    book.first_since = 0.0
                    self._parts = None
            self.polled_until = self._next_poll()
        if self._parts is None:  # rebuilt only after a poll, a start or an end (about one request in two)
            self._parts = self._build_parts()
        snapshots, reserved, released, in_flight = self._parts
        # Every field given (the defaults' factories would build three empty dicts per request).
        return LiveState(now, snapshots, self.health.view(now), reserved, self.stale_s, _NONE, released,
                         in_flight, self.slo_out, _EMPTY, 0, _EMPTY, _EMPTY)

    def _build_parts(self) -> tuple[dict, dict, dict, dict]:
        """The LiveState's snapshots, reservations, released blocks and in-flight counts (one loop)."""
        snapshots: dict[str, EngineSnapshot | None] = {}
        reserved: dict[str, int] = {}
        released: dict[str, int] = {}
        in_flight: dict[str, InFlight] = {}
        for n, b in self.books.items():
            snapshots[n] = b.snapshot
            if b.reserved:
                reserved[n] = b.reserved
            if b.released_since:
                released[n] = b.released_since
            if b.num or b.ended_since:
                in_flight[n] = InFlight(b.num, b.started_since, b.ended_since, b.tokens_since, b.first_since)
        return snapshots, reserved, released, in_flight

    def _next_poll(self) -> float:
        """The earliest time a poll falls due: the test above, `now - taken_at >= poll_s`, cannot hold
        before any snapshot's taken_at + poll_s less a rounding margin (then the exact test decides)."""
        taken = [b.snapshot.taken_at for b in self.books.values() if b.snapshot is not None]
        if len(taken) < len(self.books) or not taken:
            return float("-inf")
        return min(taken) + self.poll_s - 1e-6 * max(1.0, self.poll_s)

    def started(self, backend: str, request: int, blocks: int, now: float, prompt_tokens: int = 0) -> None:
        book = self.books[backend]
        self._parts = None
        book.reserved += blocks
        book.num += 1
        self.num_in_flight += 1
        if not book.started_since:
            book.first_since = now
        book.started_since += 1
        book.tokens_since += prompt_tokens
        book.start_time[request] = now
        book.prompt[request] = prompt_tokens

    def ended(self, backend: str, request: int, blocks: int, now: float) -> None:
        book = self.books[backend]
        self._parts = None
        book.reserved -= blocks
        book.num -= 1
        self.num_in_flight -= 1
        started, tokens = book.start_time.pop(request), book.prompt.pop(request)
        if book.pending:  # a poll taken before this end, not yet seen: it will count it
            book.ends.append((now, started, blocks))
        # Started before the poll: it ended since (D). One sent at the poll's instant was counted as sent since
        # (started() counts every start after a poll taken at its arrival): it leaves that count.
        if book.snapshot is not None and started < book.snapshot.taken_at:
            book.ended_since += 1
            book.released_since += blocks
        else:
            book.started_since = max(0, book.started_since - 1)
            book.tokens_since = max(0, book.tokens_since - tokens)
            if book.started_since and started == book.first_since:  # the first of them ended: the next one
                book.first_since = book.first_after(book.snapshot.taken_at if book.snapshot else -math.inf)
