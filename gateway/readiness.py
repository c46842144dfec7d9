"""What GET /readyz answers: ready or not, each background task's state, the policy version in force,
the last refused reload and what waits for a restart. Anyone sees states and counts; error strings,
team names and engine arguments only the admin key sees.

Not ready (503) when: the app is starting or stopping, no backend is open, or the usage ledger is
failing persistently — its store has refused writes (OOM, READONLY, ...) for `unready_after_s` in a
row, its spill file cannot be written (records held in memory only), or its writer thread is gone.
An unreachable store alone keeps the replica ready: records wait in the spill file (fail-open)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gateway.backends.base import BackendState
from gateway.reload_changes import restart_backends
from observability.ledger import Ledger
from observability.limits_protocol import Limiter
from policies.engine_poller import EngineStatePoller
from policies.reload import PolicyReloader


@dataclass
class Readiness:
    """The background parts /readyz reports on; create_app fills it in, a reload updates it."""

    ledger: Ledger | None = None
    reloader: PolicyReloader | None = None
    poller: EngineStatePoller | None = None
    restart_needed: tuple[str, ...] = ()  # one line per policy change that waits for a restart
    limiter: Limiter | None = None  # failing open or not (Redis); ready either way: fail-open is documented
    # `hybridgw serve --workers N`: how many workers, which one answered (serve_worker.workers_view)
    workers: Callable[[bool], Awaitable[dict[str, Any]]] | None = None  # (admin) -> body
    shadow: Any = None  # gateway.shadow.Shadower: its workers' state (`status`), shown among the tasks
    heap_trimmer: Any = None  # gateway.heap_trim.HeapTrimmer (`hybridgw serve` on glibc): its state among the tasks


def _tasks(r: Readiness, admin: bool) -> dict[str, Any]:
    states = [part.status.snapshot() for part in (r.ledger, r.poller, r.reloader, r.shadow, r.heap_trimmer) if part is not None]
    return {s.name: s.detail() if admin else s.public() for s in states}


def _policy(r: Readiness, admin: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"restart_needed": list(r.restart_needed) if admin else restart_backends(r.restart_needed)}
    if r.reloader is not None:
        s = r.reloader.state()
        out.update(version=s.version, loaded_at=round(s.loaded_at, 3), reloads=s.reloads,
                   last_reload_refused=s.last_error is not None)
        if admin:
            out.update(source=s.source, last_reload_error=s.last_error, last_reload_error_at=s.last_error_at)
    return out


def _ledger(ledger: Ledger, admin: bool) -> dict[str, Any]:
    h = ledger.health()
    out = {"failing": h.failing, "queued": h.queued, "spill_pending": h.spill_pending,
           "dead_lettered": h.dead_lettered}
    if admin:
        out["store_down"] = h.store_down
    return out


def _backend(state: BackendState, admin: bool) -> dict[str, Any]:
    out = asdict(state)
    if not admin:
        out.pop("last_error", None)  # an upstream's error text
    return out


def readiness(app_ready: bool, backends: Mapping[str, BackendState], absent: Mapping[str, str],
              r: Readiness, *, admin: bool) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of /readyz."""
    ledger_failing = r.ledger is not None and r.ledger.health().failing
    ready = app_ready and bool(backends) and not ledger_failing
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "backends": {name: _backend(state, admin) for name, state in backends.items()},
        "absent_backends": dict(absent),
        "tasks": _tasks(r, admin),
        "policy": _policy(r, admin),
    }
    if r.ledger is not None:
        body["ledger"] = _ledger(r.ledger, admin)
    limiter = r.limiter.state() if r.limiter is not None else None
    if limiter is not None:
        body["limiter"] = limiter.detail() if admin else limiter.public()
    if r.heap_trimmer is not None:
        body["heap_trim"] = r.heap_trimmer.figures()  # trims, RSS given back (gateway/heap_trim.py)
    if admin and r.poller is not None:
        body["engine_state_errors"] = dict(r.poller.errors)
    return (200 if ready else 503), body
