"""The Shadower: a sampled request's second answer, fetched in the background by a few supervised
workers (bounded: a full queue drops the pair, counted, never delays the client), recorded in the
usage ledger as the team's spend (tagged shadow) and kept with the served answer in the pair store.
On a local engine the call holds its KV blocks like a client request, and is dropped when they do not fit."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway import shadow_call
from gateway.shadow_record import pair_of
from gateway.shadow_room import no_room, shadow_facts
from observability.limits_protocol import LimitExceeded, Reservation
from observability.shadow_pairs import Answer, PairStore
from observability.task_status import TaskStatus
from policies.decision import Target
from policies.holds import Hold
from policies.shadow_spec import ShadowSpec, forbidden_backends, partner
from policies.structured_output import cannot_constrain

if TYPE_CHECKING:
    from gateway.exchange import Exchange
    from gateway.services import Services

# no_room: a local engine had no room for the call when its turn came (dropped, as a client request spills)
OUTCOMES = ("sampled", "sent", "ok", "failed", "dropped", "no_room", "unhealthy", "skipped", "stored",
            "store_failed")


class PairNotStored(Exception):
    """The pair store refused or could not be reached (the call itself was made and recorded)."""


@dataclass(frozen=True)
class ShadowJob:
    ex: Exchange  # finished: its record is written, nothing changes it any more
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    spec: ShadowSpec
    served: Answer
    target: Target  # the shadow call's backend and model


class Shadower:
    def __init__(self, svc: Services, open_store: Callable[[], PairStore]) -> None:
        self.svc = svc
        self._open_store = open_store
        self._store: PairStore | None = None
        self._store_lock = threading.Lock()  # opened from worker threads (a pair, an export)
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self.status = TaskStatus("shadow")
        self.status.ok()  # idle is running: ready to take pairs; a failed one shows as retrying until the next
        self._queue: asyncio.Queue[ShadowJob] | None = None  # made on the first sampled request
        self._workers: list[asyncio.Task[None]] = []
        self._pending = 0  # queued + running

    def offer(self, ex: Exchange, body: dict[str, Any], spec: ShadowSpec, text: str) -> None:
        """Queue the second call for a served, sampled request; never raises, never waits."""
        try:
            job = self._job(ex, body, spec, text)
        except Exception as exc:  # a bug here must not reach the client's response
            self.svc.log.warning("shadow: request %s not shadowed: %r", ex.request_id, exc)
            job = None
        self.counts["sampled"] += 1
        if job is None:
            self.counts["skipped"] += 1
            return
        limits = (ex.route.policy if ex.route else self.svc.policy.current).policy.shadow_limits
        if self._pending >= limits.max_in_flight + limits.max_queue:
            self.counts["dropped"] += 1
            return
        self._start(limits.max_in_flight)
        assert self._queue is not None
        self._pending += 1
        self._queue.put_nowait(job)

    def _job(self, ex: Exchange, body: dict[str, Any], spec: ShadowSpec, text: str) -> ShadowJob | None:
        if ex.ending.status != "ok" or ex.target is None or ex.route is None or ex.outcome is None:
            return None
        compiled = ex.route.policy
        other = partner(spec, ex.target.backend)
        # The guard behind the policy check: a team's prompts never go where allowed_backends forbid.
        if other is None or forbidden_backends(spec, compiled.team(ex.team).allowed_backends):
            return None
        if other not in self.svc.backends:  # absent here (requires_env unset)
            return None
        specs = compiled.policy.backends
        if ex.facts is not None and ex.facts.structured_output and other in specs and cannot_constrain(specs[other]):
            return None  # JSON output or a tool call: our engine would answer its 400, no pair to compare
        entry = self.svc.catalog.aliases.get(ex.alias)
        model = next((t.model for t in entry.targets if t.backend == other), None) if entry else None
        model = model or spec.models.get(other)
        messages = body.get("messages")
        if model is None or not isinstance(messages, list):
            return None
        stats_e2e = ex.clock.end - ex.clock.arrival if ex.clock.end is not None else None
        served = Answer(ex.target.backend, ex.target.model, text, "ok", stats_e2e,
                        ex.outcome.prompt_tokens or ex.estimated_prompt_tokens, ex.outcome.completion_tokens)
        return ShadowJob(ex, messages, body, spec, served, Target(other, model))

    def _start(self, workers: int) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._workers = [w for w in self._workers if not w.done()]
        loop = asyncio.get_running_loop()
        while len(self._workers) < workers:
            self._workers.append(loop.create_task(self._work(), name="shadow-worker"))

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
                self.status.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # survive anything: this pair is lost, the next one is tried
                self.status.failed(exc)
                self.svc.log.warning("shadow: request %s: %r", job.ex.request_id, exc)
            finally:
                self._pending -= 1

    async def _run(self, job: ShadowJob) -> None:
        backend = job.target.backend
        circuit = self._circuit(backend)
        if circuit == "open":
            self.counts["unhealthy"] += 1
            return
        fits, hold = self._hold(job)
        if not fits:
            self.counts["no_room"] += 1
            return
        # Half-open, this call is the one probe if it can claim it — given back if the call is not made after
        # all (limits): a probe claimed for no call would keep the backend open to everyone until probe_timeout_s.
        probe = circuit == "half_open"
        if probe and not self.svc.live.health.claim_probe(backend, self.svc.live.clock()):
            self.svc.live.release(hold)
            self.counts["unhealthy"] += 1
            return
        reservation: Reservation | None | bool = False
        try:
            reservation = await self._reserve(job)
        finally:
            if reservation is False:  # no call: over the team's limits (dropped), the limiter failed, shutdown
                self.svc.live.release(hold)
                if probe:
                    self.svc.live.health.release_probe(backend)
        if reservation is False:
            return
        assert reservation is None or isinstance(reservation, Reservation)
        try:
            answer = await self._send(job, reservation, probe)
        finally:  # the call is over, whatever its outcome (failed, cancelled at shutdown)
            self.svc.live.release(hold)
        if answer.status != "ok":
            self.counts["failed"] += 1
            return
        self.counts["ok"] += 1
        await self._keep(job, answer, job.ex)

    def _circuit(self, backend: str) -> str:
        """The backend's circuit now: no call while open (a client's request would skip it too); half-open,
        the call is the one probe when it can claim it (a backend only shadows reach would otherwise stay
        half-open for good)."""
        view = self.svc.live.health.view(self.svc.live.clock()).get(backend)
        return "closed" if view is None else view.state

    def _hold(self, job: ShadowJob) -> tuple[bool, Hold | None]:
        """(fits, the call's KV hold on a local engine — None on a hosted one), taken as a client
        request's is; (False, None) when the engine has no room for it now. No await in between."""
        live, facts, backend = self.svc.live, job.ex.facts, job.target.backend
        compiled = job.ex.route.policy if job.ex.route else self.svc.policy.current
        if backend not in compiled.engines:
            return True, None
        if facts is None:
            return False, None
        state = live.live_state()
        facts = shadow_facts(facts, backend, state)
        why = no_room(compiled, facts, state, backend)
        if why is not None:
            self.svc.log.debug("shadow: request %s not sent to %s: %s", job.ex.request_id, backend, why)
            return False, None
        return True, live.reserve(backend, facts)

    async def _send(self, job: ShadowJob, reservation: Reservation | None, probe: bool) -> Answer:
        """The call (`probe`: its backend's half-open probe), recorded; `reservation` holds its spend (or None)."""
        self.counts["sent"] += 1
        sent_wall, sent = time.time(), time.perf_counter()
        try:
            answer = await shadow_call.call(self.svc, job, sent, probe)
        except asyncio.CancelledError:  # shutdown's drain ran out: the call may have cost, so it is recorded
            target = job.target
            aborted = Answer(target.backend, target.model, "", "aborted", time.perf_counter() - sent,
                             error="the gateway shut down during the shadow call")
            shadow_call.record(self.svc, job, aborted, sent_wall, reservation)
            raise
        shadow_call.record(self.svc, job, answer, sent_wall, reservation)
        return answer

    async def _reserve(self, job: ShadowJob) -> Reservation | None | bool:
        """The shadow's spend held against the team's and key's limits: over them, the pair is dropped
        (False) — the team pays for shadow calls, and they never push it past its budget."""
        svc, ex = self.svc, job.ex
        if svc.limiter is None:
            return None
        tokens = ex.estimated_prompt_tokens + ex.estimated_completion_tokens
        cost = svc.pricing.cost_usd(job.target, ex.estimated_prompt_tokens, ex.estimated_completion_tokens)
        try:
            return await svc.limiter.reserve(ex.request_id + ".shadow", ex.team, ex.key_id, tokens, cost,
                                             key_limits=ex.key_spec.limits)
        except LimitExceeded:
            self.counts["dropped"] += 1
            return False

    def read_pairs(self, team: str, limit: int | None = None) -> list[Any]:
        """The team's stored pairs, oldest first (sync: call it in a worker thread)."""
        return self._pair_store().pairs(team, limit)

    def _pair_store(self) -> PairStore:
        with self._store_lock:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    async def _keep(self, job: ShadowJob, answer: Answer, ex: Exchange) -> None:
        try:
            store = await asyncio.to_thread(self._pair_store)
            await asyncio.to_thread(store.add, pair_of(job, answer), job.spec.max_pairs)
        except Exception as exc:  # the worker reports it (retrying) and goes on with the next pair
            self.counts["store_failed"] += 1
            raise PairNotStored(f"pair store: {type(exc).__name__}: {exc}") from exc
        self.counts["stored"] += 1

    async def aclose(self) -> None:
        """Let running calls finish (bounded), drop what is still queued, close the store."""
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait()
                self._pending -= 1
                self.counts["dropped"] += 1
            running = [w for w in self._workers if not w.done()]
            deadline = time.monotonic() + self.svc.policy.current.policy.shadow_limits.drain_s
            while self._pending > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            for worker in running:
                worker.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        self.status.stopped()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
