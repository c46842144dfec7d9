"""What this gateway sent to which engine, as prefix keys (llm-d's approximate prefix scorer): a prompt's
UTF-8 text is cut into fixed-size chunks, each keyed by the SHA-256 of everything up to its end, and each
engine keeps an LRU of the keys last sent to it, sized like the engine's KV pool. In memory only; the
router owns one."""
from __future__ import annotations

import hashlib
import json
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

from policies.live import EngineSnapshot

# Bytes per key. The engine's keys are over its own tokens, which the gateway does not have (a remote
# engine's tokenizer and chat template); a shared text prefix is a shared token prefix up to the last
# chunk, so text chunks find the same prefixes. 256 bytes of English ≈ 64 tokens ≈ 4 KV blocks of 16:
# fine enough for the prefixes worth routing on (system prompts, conversations), and ~1 µs per key.
CHUNK_BYTES = 256
MAX_CHUNKS = 256  # 64 KiB of prompt: past that a prefix match changes no decision
_ROOT = b"hybridgw gateway prefix index v1"


def prompt_bytes(body: Mapping[str, Any]) -> bytes:
    """prompt_text as UTF-8 (what the keys are over)."""
    return prompt_text(body).encode("utf-8", "surrogatepass")


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt as one string, in the order an engine's chat template lays it out: tools first,
    then each message's role, name and content (separators that user text is unlikely to contain)."""
    if "messages" not in body:
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else json.dumps(prompt, separators=(",", ":"), default=str)
    parts = []
    tools = body.get("tools") or body.get("functions")
    if tools:
        parts.append(json.dumps(tools, separators=(",", ":"), sort_keys=True, default=str))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content, separators=(",", ":"), default=str)
        parts.append(f"{message.get('role', '')}\x1f{message.get('name', '')}\x1f{text}")
    return "\x1e".join(parts)


def prefix_keys(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> tuple[bytes, ...]:
    """One key per full chunk, naming the whole prefix up to its end (as the engine's chained block
    keys do): one running SHA-256, read at each chunk's end. 16 bytes of it: collisions would need
    2^64 prompts."""
    keys = []
    running = hashlib.sha256(_ROOT)
    update, digest, view = running.update, running.digest, memoryview(data)
    for start in range(0, min(len(data) // chunk_bytes, MAX_CHUNKS) * chunk_bytes, chunk_bytes):
        update(view[start:start + chunk_bytes])
        keys.append(digest()[:16])  # digest() finishes a copy of the state: the running hash goes on
    return tuple(keys)


class PrefixIndex:
    """Per engine, the chunk keys last sent to it (least recently sent evicted first), capped at what
    its KV pool can hold; forgotten when the engine restarts or says it does not cache prefixes."""

    def __init__(self, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self._lru: dict[str, OrderedDict[bytes, None]] = {}
        self._capacity: dict[str, int] = {}  # chunks
        self._queried: dict[str, int] = {}  # the engine's lifetime lookup counter, last seen

    def sync(self, backend: str, snap: EngineSnapshot | None) -> bool:
        """Follow one engine's polled state; True when prefix matches on it mean anything."""
        if snap is None or not snap.prefix_caching:
            return False
        last = self._queried.get(backend, 0)
        self._queried[backend] = snap.prefix_queried_tokens
        if snap.prefix_queried_tokens < last:  # the counter restarted: so did the engine, its cache is empty
            self._lru.pop(backend, None)
        return True

    def match(self, backend: str, keys: tuple[bytes, ...]) -> int:
        """How many leading keys the engine holds (a chain: the first one missing ends the prefix)."""
        lru = self._lru.get(backend)
        if not lru:
            return 0
        n = 0
        for key in keys:
            if key not in lru:
                break
            n += 1
        return n

    def record(self, backend: str, keys: tuple[bytes, ...], capacity_chunks: int) -> None:
        """`keys` were just sent to `backend`. The root chunk becomes the most recent one: engines
        free a sequence's tail blocks first, and a chain missing its head matches nothing."""
        lru = self._lru.setdefault(backend, OrderedDict())
        for key in reversed(keys):
            lru[key] = None
            lru.move_to_end(key)
        cap = self._capacity[backend] = max(1, capacity_chunks)
        while len(lru) > cap:
            lru.popitem(last=False)

    def occupancy(self, backend: str) -> float:
        """Share of the engine's cache that what we sent fills (0..1)."""
        cap = self._capacity.get(backend)
        return min(1.0, len(self._lru.get(backend, ())) / cap) if cap else 0.0

    def forget(self, backend: str) -> None:
        self._lru.pop(backend, None)

    def size(self, backend: str) -> int:
        return len(self._lru.get(backend, ()))


class InFlightPrefixes:
    """The prefix keys of this gateway's requests in flight on each engine. A new request's blocks that
    one of them shares are held on the engine already, and reserved by that one's hold: counting them
    again would make a hot prefix's engine look full (and send its requests elsewhere, to miss)."""

    def __init__(self) -> None:
        self._keys: dict[str, Counter[bytes]] = {}

    def add(self, backend: str, keys: tuple[bytes, ...]) -> None:
        self._keys.setdefault(backend, Counter()).update(keys)

    def remove(self, backend: str, keys: tuple[bytes, ...]) -> None:
        held = self._keys.get(backend)
        if held is None:
            return
        held.subtract(keys)
        for key in keys:
            if held[key] <= 0:
                del held[key]

    def shared(self, backend: str, keys: tuple[bytes, ...]) -> int:
        """How many leading keys an in-flight request on the engine also has."""
        held = self._keys.get(backend)
        n = 0
        while held and n < len(keys) and keys[n] in held:
            n += 1
        return n


def capacity_chunks(snap: EngineSnapshot, bytes_per_token: float, chunk_bytes: int = CHUNK_BYTES) -> int:
    """The engine's whole KV pool in chunks of text (its blocks × tokens per block × bytes per token)."""
    return int(snap.num_blocks_total * snap.block_size * bytes_per_token / chunk_bytes)
