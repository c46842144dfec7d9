"""The live-state adapter: polls every engine backend (~4×/s) over HTTP and keeps the latest frozen
snapshot of each. A failed poll keeps the old snapshot, which then goes stale and reads as unknown.
The polling task survives any error (backing off while it repeats) and reports its state."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import httpx

from observability.task_status import TaskStatus
from policies.engine_state import VllmSample, parse_engine_state, parse_vllm_metrics, vllm_snapshot
from policies.live import EngineSnapshot
from policies.schema import Policy

log = logging.getLogger("hybridgw.policy.state")
PollOutcome = Literal["ok", "keep", "drop", "down"]


def _state_client(timeout_s: float) -> httpx.AsyncClient:
    """httpx honouring HTTP(S)_PROXY as the upstream client does; a proxy it cannot use (socks without
    socksio) is logged and skipped, never a failed start."""
    try:
        return httpx.AsyncClient(timeout=timeout_s)
    except ImportError as exc:
        log.warning("engine state polls go direct: the environment's proxy cannot be used (%s)", exc)
        return httpx.AsyncClient(timeout=timeout_s, trust_env=False)


@dataclass(frozen=True)
class StateSource:
    backend: str
    url: str
    format: str  # "hybridgw" (GET /v1/engine/state JSON) or "vllm" (Prometheus /metrics)
    kv_bytes_per_token: int = 0  # vllm: from the policy
    on_server: bool = True  # the URL is the serving server's own: a refused connection means it is down


def _server_root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def state_sources(policy: Policy, engine_urls: Mapping[str, str] | None = None) -> list[StateSource]:
    """Where to poll each engine backend: its state_url, else its (or the spawned engine's) server
    root + /v1/engine/state or /metrics. Engines with no known URL yet are left out."""
    urls = engine_urls or {}
    out = []
    for name, spec in policy.backends.items():
        fmt = spec.state_source
        if fmt == "none":
            continue
        url = spec.state_url
        base = urls.get(name) or spec.base_url
        if url is None and base:
            url = _server_root(base) + ("/v1/engine/state" if fmt == "hybridgw" else "/metrics")
        if url:
            out.append(StateSource(name, url, fmt, spec.kv_bytes_per_token or 0, on_server=spec.state_url is None))
    return out


class EngineStatePoller:
    """Polls `sources` every `interval_s`; `snapshots` is replaced whole on each round (read it freely)."""

    def __init__(self, sources: list[StateSource], interval_s: float = 0.25, timeout_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sources = list(sources)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.snapshots: Mapping[str, EngineSnapshot] = MappingProxyType({})
        self.errors: dict[str, str] = {}  # backend → last poll error, for logs and explain
        self.unreachable: frozenset[str] = frozenset()  # refused the last poll: down, not just unknown
        self._vllm_prev: dict[str, VllmSample] = {}
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self.status = TaskStatus("engine_state_poller", base_s=max(interval_s, 0.25))

    def set_sources(self, sources: list[StateSource]) -> None:
        """Used on policy reload; snapshots of backends that are gone are dropped next round."""
        self.sources = list(sources)

    async def start(self) -> None:
        if self._task is None:
            self._client = _state_client(self.timeout_s)
            await self._guarded_poll()
            self._task = asyncio.create_task(self._run(), name="hybridgw-engine-state-poller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
        self.status.stopped()

    async def _run(self) -> None:
        while True:
            started = self.clock()
            backoff = await self._guarded_poll()
            await asyncio.sleep(max(backoff, self.interval_s - (self.clock() - started)))

    async def _guarded_poll(self) -> float:
        """One round that cannot kill the task; returns the back-off to wait (0 after a good round)."""
        try:
            await self.poll_once()
        except Exception as exc:  # the poller must outlive any error: engines then read as unknown
            delay = self.status.failed(exc)
            log.exception("engine state poller failed; retrying in %.1f s", delay)
            return delay
        self.status.ok()
        return 0.0

    async def poll_once(self) -> None:
        sources = list(self.sources)
        results = await asyncio.gather(*(self._poll(s) for s in sources))
        merged: dict[str, EngineSnapshot] = {}
        down: set[str] = set()
        for source, (snap, outcome) in zip(sources, results, strict=True):
            old = self.snapshots.get(source.backend)
            if snap is not None:
                merged[source.backend] = snap
            elif outcome == "keep" and old is not None:
                merged[source.backend] = old  # ages into "unknown" unless a later poll succeeds
            elif outcome == "down":
                down.add(source.backend)
        self.snapshots = MappingProxyType(merged)
        self.unreachable = frozenset(down)

    async def _poll(self, source: StateSource) -> tuple[EngineSnapshot | None, PollOutcome]:
        """A failed poll keeps the old snapshot ("keep"); an engine that says it is unhealthy is
        dropped at once ("drop"); one whose own server refuses the connection is "down"."""
        client = self._client
        if client is None:
            return None, "keep"
        # Stamped when asked, not when answered: the state may predate anything that happened
        # during the round trip (a request finishing, say), and the router must assume it does.
        taken_at = self.clock()
        try:
            response = await client.get(source.url)
            response.raise_for_status()
            if source.format == "vllm":
                sample = parse_vllm_metrics(response.text, taken_at)
                prev, self._vllm_prev[source.backend] = self._vllm_prev.get(source.backend), sample
                snap: EngineSnapshot | None = vllm_snapshot(sample, prev, source.kv_bytes_per_token)
            else:
                snap = parse_engine_state(response.json(), taken_at)
        except Exception as exc:  # noqa: BLE001 (HTTP errors, and any answer our parsers choke on)
            self._note_error(source.backend, f"{type(exc).__name__}: {str(exc)[:300]}")
            refused = isinstance(exc, httpx.ConnectError) and source.on_server
            return None, "down" if refused else "keep"
        if snap is None:
            self._note_error(source.backend, "engine reports itself unhealthy")
            return None, "drop"
        self.errors.pop(source.backend, None)
        return snap, "ok"

    def _note_error(self, backend: str, message: str) -> None:
        if self.errors.get(backend) != message:  # log changes, not every 250 ms
            log.warning("engine state poll failed for %s: %s", backend, message)
        self.errors[backend] = message
