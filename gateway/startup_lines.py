"""What `hybridgw serve` prints at start about where requests can go: each backend (on, and where;
or off, and why) and each model alias with the backends that serve it. Pure: lines from the catalog."""
from __future__ import annotations

from gateway.catalog import Catalog
from gateway.settings import Settings
from policies.loader import LoadedPolicy


def backend_lines(loaded: LoadedPolicy, catalog: Catalog) -> list[str]:
    policy = loaded.policy
    lines = []
    for name, spec in policy.backends.items():
        resolved = catalog.backends.get(name)
        if resolved is None:
            lines.append(f"hybridgw: backend {name}: off ({catalog.absent.get(name, 'not configured')})")
            continue
        what = f"{spec.kind} {spec.model}" if spec.kind_info.spawns and spec.model else spec.kind
        cap = spec.max_tokens_default
        note = f"; max_tokens {cap} when the client sets none" if cap is not None else ""
        lines.append(f"hybridgw: backend {name}: on, {what} at {resolved.base_url or 'its provider'}{note}")
    # Backends whose requires_env variable is unset were pruned from the policy with their aliases.
    lines += [f"hybridgw: backend {name}: off (its requires_env variable {var} is not set)"
              for name, var in zip(loaded.absent_backends, loaded.absent_env, strict=True)]
    for alias, entry in policy.models.items():
        served = catalog.aliases.get(alias)
        where = ", ".join(t.backend for t in served.targets) if served else "no backend on (refused)"
        teams = "" if entry.teams is None else f" (teams: {', '.join(entry.teams)})"
        lines.append(f"hybridgw: model {alias} -> {where}{teams}")
    return lines


def console_line(settings: Settings) -> str:
    """Where the web console is and how to log in to it."""
    login = "admin key to log in" if settings.admin_key else "set HYBRIDGW_ADMIN_KEY to log in"
    return f"hybridgw: web console on http://{settings.host}:{settings.port}/console ({login})"
