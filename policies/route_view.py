"""The engines as the router saw them for one decision (observability.usage.EngineView per engine):
recorded with the request, so a replay can check its simulated gateway's view against the real one."""
from __future__ import annotations

from collections.abc import Iterable

from observability.usage import EngineView
from policies.live import LiveState


def engine_views(live: LiveState, engines: Iterable[str], routed_s: float | None = None) -> dict[str, EngineView]:
    """Each of `engines` with a polled snapshot: its age, its numbers, and the queue and free KV the
    router estimated from them (None where the snapshot is too old to use); `routed_s`: how long after the
    request's arrival it was routed (then each view says when its poll was taken, from the arrival)."""
    views = {}
    for name in engines:
        snap = live.engines.get(name)
        if snap is not None:
            age = round(live.now - snap.taken_at, 4)
            views[name] = EngineView(age, snap.num_waiting, snap.num_running, snap.num_blocks_free,
                                     live.num_waiting(name), live.free_blocks(name),
                                     None if routed_s is None else round(routed_s - age, 4))
    return views
