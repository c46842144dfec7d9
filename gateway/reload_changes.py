"""What a reloaded policy changes that only a restart applies: backends are opened (and engines
spawned) once at start, so a new backend or a changed connection or engine setting waits for the
next restart. Pure: compares the policy the process started with and the one just loaded."""
from __future__ import annotations

from policies.schema import BackendSpec, Policy

# Read when the backend object is built or the engine spawned; everything else (prices, limits,
# max_waiting, state polling, rules, aliases) applies on reload.
FIXED_AT_START = ("kind", "base_url", "base_url_env", "api_key", "api_key_env", "requires_env", "model",
                  "engine_args", "timeouts", "max_connections")
_SHOWN = ("kind", "model", "engine_args")  # values safe to show (no keys, no URLs with credentials)


def _changed(name: str, old: BackendSpec, new: BackendSpec) -> list[str]:
    out = []
    for field in FIXED_AT_START:
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            detail = f": {before!r} → {after!r}" if field in _SHOWN else ""
            what = "engine" if old.spawned else "backend"
            out.append(f"{what} {name}: {field} changed{detail}; the running one keeps the old until a restart")
    return out


def restart_changes(running: Policy, loaded: Policy) -> tuple[str, ...]:
    """One line per change in `loaded` that the running process does not apply (empty: none)."""
    out: list[str] = []
    for name, spec in loaded.backends.items():
        old = running.backends.get(name)
        if old is None:
            out.append(f"backend {name}: new; it is opened at the next restart (routes skip it meanwhile)")
        else:
            out.extend(_changed(name, old, spec))
    return tuple(out)


def restart_backends(changes: tuple[str, ...]) -> list[str]:
    """The backend names the change lines are about (what /readyz shows without the admin key)."""
    return sorted({line.split(" ", 2)[1].rstrip(":") for line in changes})
