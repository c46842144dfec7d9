"""The token ids a replayed prompt is given for an engine that caches prefixes: only which blocks they
share matters — a prefix id's tokens are the same for every request with it, the rest unique."""
from __future__ import annotations

import zlib

from policies.replay.traffic import TrafficRecord


class PromptIds:
    """Each prefix id's tokens, built once and shared by the requests that carry it."""

    def __init__(self) -> None:
        self._prefixes: dict[str, list[int]] = {}

    def of(self, i: int, record: TrafficRecord) -> list[int]:
        """Request i's token ids: its prefix's tokens, then the rest starting with a token of its own."""
        shared: list[int] = []
        if record.prefix_id and record.prefix_tokens:
            shared = self._prefixes.get(record.prefix_id, [])
            if len(shared) < record.prefix_tokens:
                # The id's CRC as the first token: two ids share no block (bar a CRC collision).
                shared = [zlib.crc32(record.prefix_id.encode())] + [k % 50000 + 1 for k in range(1, record.prefix_tokens)]
                self._prefixes[record.prefix_id] = shared
            shared = shared[:record.prefix_tokens]
        rest = record.prompt_tokens - len(shared)
        return shared + ([100_000 + i] + [0] * (rest - 1) if rest > 0 else [])
