"""The engines as the router saw them for one decision (observability.usage.EngineView per engine):
recorded with the request, so a replay can check its simulated gateway's view against the real one."""
from __future__ import annotations

from collections.abc import Iterable

from observability.usage import EngineView
from policies.live import LiveState


def engine_views(live: LiveState, engines: Iterable[str]) -> dict[str, EngineView]:
    """Each of `engines` with a polled snapshot: its age, its numbers, and the queue and free KV the
    router estimated from them (None where the snapshot is too old to use)."""
    views = {}
    for name in engines:
        snap = live.engines.get(name)
        if snap is not None:
            views[name] = EngineView(round(live.now - snap.taken_at, 4), snap.num_waiting, snap.num_running,
                                     snap.num_blocks_free, live.num_waiting(name), live.free_blocks(name))
    return views
