"""Everything a request handler needs, built once by create_app and kept on `app.state.services`."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import KeyInfo, authenticate
from gateway.backends.base import Backend
from gateway.catalog import Catalog
from gateway.key_store import KeyStore
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from gateway.token_count import TokenCounter
from observability.limits_protocol import Limiter
from observability.usage import UsageSink
from policies.decision import RequestFacts, RouteDecision
from policies.router import PolicyRouter

RouteFn = Callable[[RequestFacts], RouteDecision]


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    backends: Mapping[str, Backend]
    key_store: KeyStore
    usage_sink: UsageSink
    router: PolicyRouter  # facts, decisions, KV holds, backend health, calibration
    telemetry: Telemetry
    tokens: TokenCounter
    limiter: Limiter | None = None
    route_fn: RouteFn | None = None  # overrides router.route (tests, embedders)
    access_log: logging.Logger = field(default_factory=lambda: logging.getLogger("hybridgw.access"))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hybridgw.gateway"))
    ready: bool = False
    _pending: set[asyncio.Task[Any]] = field(default_factory=set)

    def authenticate(self, header: str | None) -> KeyInfo:
        return authenticate(header, self.lookup_key)

    def lookup_key(self, key_hash: str) -> KeyInfo | None:
        """Keys made with `hybridgw keys`, then keys the policy file lists under a team (by hash)."""
        info = self.key_store.lookup(key_hash)
        if info is not None:
            return info
        team = self.router.compiled.team_by_key_hash.get(key_hash)
        return None if team is None else KeyInfo(key_id="policy:" + key_hash[:8], team=team)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run follow-up work (limit settlement) off the request path, keeping a reference."""
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.warning("background task failed: %r", task.exception())

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
