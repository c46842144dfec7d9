"""A bounded LRU of token counts of long prompt texts, keyed by the text itself: a hit is exact (the
dict compares the whole string), and the texts that come back — system prompts, tool definitions,
the history a chat resends each turn — skip tiktoken's BPE (~100 µs per 1,000 tokens)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

# Shorter texts count in a few µs: a slot would cost about what it saves.
MIN_CHARS = 1024
# Text the cache may hold at most, in characters (≤ 4 bytes each): ~1M tokens of English.
MAX_CHARS = 4_000_000


class CountCache:
    """Counts of one encoding's texts of MIN_CHARS or more, least recently used dropped first once the
    texts held pass `max_chars`. Thread-safe: the gateway counts large prompts in worker threads."""

    def __init__(self, count: Callable[[str], int], max_chars: int = MAX_CHARS) -> None:
        self.count = count  # the uncached count
        self._max_chars = max_chars
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, text: str) -> int:
        if len(text) < MIN_CHARS or len(text) > self._max_chars:
            return self.count(text)
        with self._lock:
            n = self._counts.get(text)
            if n is not None:
                self._counts.move_to_end(text)
                self.hits += 1
                return n
            self.misses += 1
        n = self.count(text)  # outside the lock: tiktoken releases the GIL, other threads go on
        with self._lock:
            if text not in self._counts:
                self._counts[text] = n
                self._chars += len(text)
                while self._chars > self._max_chars:
                    old, _ = self._counts.popitem(last=False)
                    self._chars -= len(old)
        return n

    def __len__(self) -> int:
        return len(self._counts)

    @property
    def chars(self) -> int:
        return self._chars
