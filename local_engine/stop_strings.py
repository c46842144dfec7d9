"""Stop strings over streamed text: hold back what may be the start of one, cut at the first match."""
from __future__ import annotations


class StopStringFilter:
    """Feed it each new piece of text; it returns what is safe to emit and whether a stop string hit.

    The last ``len(longest stop) - 1`` characters are held back, so a stop string split across
    pieces is never partly streamed; the stop string itself is never emitted.
    """

    __slots__ = ("_hold", "_pending", "_stops")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(text to emit now, True when a stop string ended the output)."""
        if not self._stops:
            return text, False
        pending = self._pending + text
        cut = -1
        for stop in self._stops:
            at = pending.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut = at
        if cut != -1:
            self._pending = ""
            return pending[:cut], True
        keep = len(pending) - self._hold
        if keep <= 0:
            self._pending = pending
            return "", False
        self._pending = pending[keep:]
        return pending[:keep], False

    def flush(self) -> str:
        """The held-back text, when the output ends for another reason."""
        pending, self._pending = self._pending, ""
        return pending
