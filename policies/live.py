"""Live backend state as the pure decision sees it: engine snapshots, health, and reservations."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from observability.fast_init import fast_init
from policies.fairness import EngineTeams

CircuitState = Literal["closed", "open", "half_open"]


@fast_init  # built per poll / per decision (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """One poll of an engine's state (our /v1/engine/state, or vLLM's /metrics)."""

    taken_at: float  # monotonic seconds when the poll answered
    model: str = ""
    kv_bytes_per_token: int = 0  # 0: unknown (vLLM does not say; the policy may)
    block_size: int = 16  # tokens per KV block
    num_blocks_total: int = 0
    num_blocks_free: int = 0
    num_running: int = 0
    num_waiting: int = 0
    prefix_cache_hit_rate: float = 0.0  # 0..1
    prefill_tokens_per_s: float = 0.0  # recent, 0 when idle
    decode_tokens_per_s: float = 0.0
    max_model_len: int = 0  # 0: unknown
    max_num_seqs: int = 0  # running slots; 0: unknown (vLLM does not say)
    max_waiting: int = 0  # the engine refuses requests (503) once this many wait; 0: unknown
    # Our engine's prefix cache (prefix affinity): on or off (vLLM: not said, read as off), and its
    # lifetime count of prompt tokens looked up — it going down means the engine restarted (cache empty).
    prefix_caching: bool = False
    prefix_queried_tokens: int = 0

    def age(self, now: float) -> float:
        return now - self.taken_at


@fast_init
@dataclass(frozen=True, slots=True)
class HealthView:
    """A backend's circuit and recent TTFT, as of the moment the view was taken."""

    state: CircuitState = "closed"
    retry_at: float = 0.0  # monotonic time the cooldown ends (state == "open")
    ttft_ewma_s: float | None = None  # None: nothing measured yet
    ttft_p95_s: float | None = None  # over a recent window
    consecutive_failures: int = 0
    unreachable: bool = False  # an engine whose server refuses connections: read as open


_HEALTHY = HealthView()


@fast_init
@dataclass(frozen=True, slots=True)
class InFlight:
    """This gateway's requests on one engine, counted against the engine's last polled state."""

    num: int = 0  # started and not yet finished (holds), now
    num_started_since: int = 0  # of those, started after the snapshot was taken: it cannot count them
    num_ended_since: int = 0  # started before the snapshot and finished after it: it still counts them
    prompt_tokens_since: int = 0  # the prompt tokens of those started since (0: not known)
    first_started_since: float = 0.0  # when the first of those started (monotonic; with num_started_since)


_NO_FLIGHT = InFlight()


@fast_init  # built per poll / per decision (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class LiveState:
    """Everything about the backends that decide() may read, frozen for one decision."""

    now: float  # monotonic seconds, the clock of the snapshots and the breakers
    engines: Mapping[str, EngineSnapshot] = field(default_factory=dict)
    health: Mapping[str, HealthView] = field(default_factory=dict)
    reserved_blocks: Mapping[str, int] = field(default_factory=dict)  # blocks held by this gateway's in-flight requests
    stale_after_s: float = 2.0
    # Engines whose server refused the last state poll: down (e.g. restarting), not merely unknown.
    unreachable: frozenset[str] = frozenset()
    # Blocks of our requests that the engine's snapshot still counts but that finished since.
    released_blocks: Mapping[str, int] = field(default_factory=dict)
    # This gateway's in-flight requests per engine: the queue as we know it, before the next poll.
    in_flight: Mapping[str, InFlight] = field(default_factory=dict)
    # slo_cost's hysteresis: (backend, SLO seconds) whose predicted TTFT missed that SLO and has not
    # yet come back below it by the rule's hysteresis (the router keeps it from decision to decision).
    slo_out: frozenset[tuple[str, float]] = frozenset()
    # Team fairness: per engine, what each team holds there and which teams want it (policies/fairness.py).
    teams: Mapping[str, EngineTeams] = field(default_factory=dict)
    # Decisions this router has taken so far: round-robin's turn (prefix_affinity's `balance`).
    turn: int = 0
    # Share of each engine's KV pool that this gateway's prefix index fills (prefix affinity's tie-break).
    prefix_occupancy: Mapping[str, float] = field(default_factory=dict)
    # Per engine, observed ÷ predicted TTFT lately (policies/ttft_scale.py); slo_cost scales by it.
    ttft_scale: Mapping[str, float] = field(default_factory=dict)

    def engine(self, backend: str) -> EngineSnapshot | None:
        """Fresh state of an engine, or None when it has none or it is stale (unknown ≠ healthy)."""
        snap = self.engines.get(backend)
        # (snap.age(now), inline: asked several times per decision)
        if snap is None or snap.num_blocks_total <= 0 or self.now - snap.taken_at > self.stale_after_s:
            return None
        return snap

    def health_of(self, backend: str) -> HealthView:
        if self.unreachable and backend in self.unreachable:
            # Down until a poll answers again: skipped like an open circuit (spill, else 503).
            view = self.health.get(backend, _HEALTHY)
            return replace(view, state="open", retry_at=max(view.retry_at, self.now), unreachable=True)
        return self.health.get(backend, _HEALTHY)

    def any_open(self, backends: tuple[str, ...]) -> bool:
        """Whether health_of says "open" for one of `backends` (decide() asks it of every outcome)."""
        if self.unreachable:
            return any(self.health_of(b).state == "open" for b in backends)
        health = self.health
        for backend in backends:
            view = health.get(backend)
            if view is not None and view.state == "open":
                return True
        return False

    def free_blocks(self, backend: str) -> int | None:
        """Blocks still free once in-flight reservations are honoured; None when state is unknown.

        An engine allocates a request's blocks as it decodes, so its own used count lags what our
        in-flight requests will need; their reservations are that need. The committed total is the
        larger of the two views (other clients' use shows only in the engine's count). Our requests
        that finished after the snapshot was taken are no longer counted as used.
        """
        snap = self.engine(backend)
        if snap is None:
            return None
        used = snap.num_blocks_total - snap.num_blocks_free - self.released_blocks.get(backend, 0)
        committed = max(used, self.reserved_blocks.get(backend, 0))
        return max(0, snap.num_blocks_total - committed)

    def num_waiting(self, backend: str) -> int | None:
        """Requests waiting in the engine now, as best known; None when its state is unknown.

        The polled count (W, which includes requests the engine accepted but has not scheduled)
        is up to a poll interval old; we know what we sent since. With C running slots at the
        snapshot, and our own S requests started since it (still in flight), D started before it and
        finished since, and N in flight in all, the queue is the larger of:
          max(0, W - D) + S   the polled queue, less ours that ended since, plus ours sent since;
          N - C               ours alone beyond its slots (covers ours still on the way at the poll).
        Ours sent since count as waiting whether or not slots are free (S: those _ours_waiting leaves):
        the engine admits a prompt only as its per-step token budget allows (64 prompt tokens a step on
        CPU), which a burst fills long before the slots, so a burst inside one poll interval queues; the
        next poll shows what it admitted (S counts only what started after the poll was taken: no double
        count). Where C is unknown (vLLM), the running count at the snapshot stands in for it. Other
        clients' requests since the poll are unknown to us; the next poll shows them.
        """
        snap = self.engine(backend)
        if snap is None:
            return None
        mine = self.in_flight.get(backend, _NO_FLIGHT)
        slots = snap.max_num_seqs or snap.num_running
        waiting = max(0, snap.num_waiting - mine.num_ended_since)
        return max(waiting + self._ours_waiting(snap, mine, waiting)[0], mine.num - slots)

    def _ours_waiting(self, snap: EngineSnapshot, mine: InFlight, polled: int) -> tuple[int, int]:
        """Of ours sent since the poll, how many and how many prompt tokens the engine has yet to take.

        An engine busy at the poll reports the prefill rate it works at: what it can have prefilled since
        the first of ours arrived (the `polled` queue ahead of them first, taken to be like ours) is
        retired, so a stream it keeps up with does not read as a queue while a burst still does. An idle
        one (its rate not current) keeps them all until the next poll: the burst into an idle engine.
        """
        started, tokens = max(0, mine.num_started_since), mine.prompt_tokens_since
        rate = snap.prefill_tokens_per_s
        if not started or tokens <= 0 or rate <= 0 or not (snap.num_running or snap.num_waiting):
            return started, tokens
        done = (self.now - mine.first_started_since) * rate - polled * tokens / started
        left = round(tokens - done, 6)  # (clock differences: 250.00000001 is 250)
        if left >= tokens:
            return started, tokens
        return (math.ceil(started * left / tokens), math.ceil(left)) if left > 0 else (0, 0)

    def queued_prompt_tokens(self, backend: str, per_request: int) -> int | None:
        """Prompt tokens the engine has still to prefill before a new request's, as best known (None:
        state unknown): ours sent since the poll at their own size, the rest of num_waiting (the polled
        queue, whose sizes it does not say) taken to be `per_request` each. A poll that shows ours
        retires them (they no longer count as sent since), so none is counted twice."""
        queued = self.num_waiting(backend)
        if queued is None:
            return None
        snap, mine = self.engines[backend], self.in_flight.get(backend, _NO_FLIGHT)
        if mine.prompt_tokens_since <= 0:
            return queued * per_request
        ours, tokens = self._ours_waiting(snap, mine, max(0, snap.num_waiting - mine.num_ended_since))
        return max(0, queued - ours) * per_request + tokens
