"""Everything a request handler needs, built once by create_app and kept on `app.state.services`."""
from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.auth import KeyInfo, admit, bearer_token, check_key_live, hash_key, is_admin, unknown_key
from gateway.backends.base import Backend
from gateway.catalog import Catalog
from gateway.errors import AuthError
from gateway.follow_ups import FollowUps
from gateway.key_cache import KeyCache
from gateway.key_store import KeyStorage
from gateway.settings import Settings
from gateway.telemetry import Telemetry
from gateway.token_count import CompletionCounter
from observability.limits_protocol import Limiter
from observability.usage import UsageSink
from policies.current import CurrentPolicy
from policies.decider import Decider
from policies.decision import RequestFacts, RouteDecision
from policies.live_book import LiveBook
from policies.pricing import Pricing

if TYPE_CHECKING:
    from gateway.shadow import Shadower

RouteFn = Callable[[RequestFacts], RouteDecision]


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    backends: Mapping[str, Backend]
    key_store: KeyStorage  # the admin API's; request-path lookups go through key_cache
    key_cache: KeyCache
    usage_sink: UsageSink
    policy: CurrentPolicy  # .current: the compiled policy a request pins
    decider: Decider  # facts and decision for one request
    live: LiveBook  # KV holds, backend health, calibration: what the request path feeds back
    pricing: Pricing  # what a request costs on its target
    telemetry: Telemetry
    tokens: CompletionCounter  # completions the upstream reported no usage for
    limiter: Limiter | None = None
    route_fn: RouteFn | None = None  # overrides decider.route (tests, embedders)
    access_log: logging.Logger = field(default_factory=lambda: logging.getLogger("hybridgw.access"))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("hybridgw.gateway"))
    ready: bool = False
    shadow: Shadower | None = None  # sampled requests' second answers (gateway/shadow.py); None: never
    _follow_ups: FollowUps = field(init=False)

    def __post_init__(self) -> None:
        self._follow_ups = FollowUps(self.log)

    async def authenticate(self, header: str | None) -> KeyInfo:
        """The caller's key as the current policy serves it (AuthError, or PermissionDenied when
        its team is not in the policy). The store is asked off the event loop."""
        token = bearer_token(header)
        if is_admin(header, self.settings.admin_key):
            raise AuthError("The admin key is for /admin and /v1/usage; model requests need a team's key.",
                            code="invalid_api_key")
        info = await self.lookup_key(hash_key(token))
        if info is None:
            raise unknown_key(token)
        return admit(check_key_live(info), self.policy.current.policy)

    async def lookup_key(self, key_hash: str) -> KeyInfo | None:
        """Keys the policy file lists under a team (by hash), then keys made with `hybridgw keys`."""
        team = self.policy.current.team_by_key_hash.get(key_hash)
        if team is not None:
            return KeyInfo(key_id="policy:" + key_hash[:8], team=team)
        return await self.key_cache.lookup(key_hash)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run follow-up work (limit settlement) off the request path (batched: gateway/follow_ups.py)."""
        self._follow_ups.add(coro)

    async def drain(self) -> None:
        await self._follow_ups.drain()
