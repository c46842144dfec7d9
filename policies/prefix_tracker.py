"""The router's prefix-affinity bookkeeping: what it sent to which engine (policies.prefix_index), what
is in flight there, and the facts that follow for one request — the share of its prompt each engine
caches, and the KV blocks it needs there less those our in-flight requests already hold."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from policies.compiled import CompiledPolicy
from policies.decision import RequestFacts
from policies.live import EngineSnapshot, LiveState
from policies.prefix_index import InFlightPrefixes, PrefixIndex, capacity_chunks, prefix_keys, prompt_bytes


class PrefixTracker:
    def __init__(self) -> None:
        self.index = PrefixIndex()
        self.in_flight = InFlightPrefixes()
        self._holds: dict[int, tuple[str, tuple[bytes, ...]]] = {}  # hold id → its engine and keys

    def occupancy(self, engines: Iterable[str]) -> dict[str, float]:
        return {b: self.index.occupancy(b) for b in engines}

    def annotate(self, facts: RequestFacts, body: Mapping[str, Any], compiled: CompiledPolicy,
                 live: LiveState) -> RequestFacts:
        """`facts` with the prompt's prefix keys, the share of it each prefix-caching engine holds as
        far as the index knows, and the KV blocks it needs on each less what our requests in flight
        there hold of the same prefix (held once on the engine, already in their holds)."""
        data = prompt_bytes(body)
        chunk = self.index.chunk_bytes
        keys = prefix_keys(data, chunk)
        if not keys:
            return facts
        match, blocks = {}, dict(facts.blocks_needed)
        for backend in compiled.aliases[facts.model_alias].by_backend:
            snap = live.engine(backend)
            if snap is None or backend not in compiled.engines or not self.index.sync(backend, snap):
                continue
            match[backend] = self.index.match(backend, keys) * chunk / len(data)
            shared = self.in_flight.shared(backend, keys)
            if shared and backend in blocks:
                tokens = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens)
                held = int(shared * chunk * tokens / len(data)) // snap.block_size
                blocks[backend] = max(1, blocks[backend] - held)
        return _with_prefix(facts, prefix_keys=keys, prefix_match=match, blocks_needed=blocks)

    def sent(self, backend: str, facts: RequestFacts, hold_id: int, snap: EngineSnapshot | None) -> None:
        """The request is on its way to `backend` (under `hold_id`): the engine will cache its prompt."""
        if not facts.prefix_keys:
            return
        self.in_flight.add(backend, facts.prefix_keys)
        self._holds[hold_id] = (backend, facts.prefix_keys)
        if snap is None or not snap.prefix_caching:
            return
        tokens = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens) or 1
        bytes_per_token = len(facts.prefix_keys) * self.index.chunk_bytes / tokens
        self.index.record(backend, facts.prefix_keys,
                          capacity_chunks(snap, bytes_per_token, self.index.chunk_bytes))

    def done(self, hold_id: int) -> None:
        """The request under `hold_id` ended (idempotent)."""
        held = self._holds.pop(hold_id, None)
        if held is not None:
            self.in_flight.remove(*held)


def _with_prefix(facts: RequestFacts, **changes: Any) -> RequestFacts:
    """dataclasses.replace(facts, **changes): RequestFacts is slotted, so its frozen init is cheap enough."""
    return replace(facts, **changes)
