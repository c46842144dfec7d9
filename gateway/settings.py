"""The gateway's settings: one frozen value built from the environment, then CLI flags on top. A malformed
number in the environment is a SettingsError naming the variable and its value (one line from each command)."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
HEAP_TRIM_S = 10.0  # HYBRIDGW_HEAP_TRIM_S: how often free heap is looked at (gateway/heap_trim.py, mallinfo2); 0: never
# (environment variable, setting, type) for the numbers
_NUMBERS: tuple[tuple[str, str, type], ...] = (
    ("HYBRIDGW_MAX_BODY_BYTES", "max_body_bytes", int),
    ("HYBRIDGW_HEADER_TIMEOUT_S", "header_timeout_s", float),
    ("HYBRIDGW_MAX_HEADER_BYTES", "max_header_bytes", int),
    ("HYBRIDGW_MAX_CONNECTIONS", "max_connections", int),
    ("HYBRIDGW_MAX_CONNECTIONS_PER_CLIENT", "max_connections_per_client", int),
    ("HYBRIDGW_STREAM_WRITE_TIMEOUT_S", "stream_write_timeout_s", float),
    ("HYBRIDGW_LEDGER_UNREADY_AFTER_S", "ledger_unready_after_s", float),
    ("HYBRIDGW_HEAP_TRIM_S", "heap_trim_s", float),
)


class SettingsError(ValueError):
    """A variable of the environment that does not read as its setting; str() is the one line to print."""


def env_number(env: Mapping[str, str], name: str, kind: type, default: Any = None) -> Any:
    """$name read as `kind` (int: a whole number; float: a finite number), both ≥ 0; `default` when unset
    or empty. SettingsError names the variable and its value otherwise."""
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value < 0 or (kind is float and not math.isfinite(value)):
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name}={raw!r} is not {what} ≥ 0")
    return value


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    policy_file: Path | None = None  # None: the embedded default policy
    data_dir: Path = field(default_factory=lambda: Path("~/.hybridgw").expanduser())
    admin_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    redis_url: str | None = None
    access_log: bool = True  # one JSON line per request on the `hybridgw.access` logger
    default_output_tokens: int = 256  # expected output when a request sets no max_tokens
    header_timeout_s: float = 10.0  # a request head (request line + headers) must arrive within this
    max_header_bytes: int = 64 * 1024  # and be at most this long (431 beyond)
    max_connections: int = 2048  # open connections in total; beyond it requests get 503 (uvicorn)
    max_connections_per_client: int = 256  # per client address (0: no bound); raise it behind a proxy
    metrics_public: bool = False  # True: GET /metrics without the admin key (team names, costs in it)
    # A streaming client that reads nothing for this long is dropped (its upstream stream closed).
    stream_write_timeout_s: float = 30.0
    # /readyz turns 503 once the usage store has refused writes this long in a row (LedgerConfig):
    # shorter takes a replica whose Redis is full or read-only out of the load balancer sooner.
    ledger_unready_after_s: float = 30.0
    heap_trim_s: float = HEAP_TRIM_S  # how often free heap is looked at (gateway/heap_trim.py); 0: never

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        if env.get("HYBRIDGW_DATA_DIR"):
            values["data_dir"] = Path(env["HYBRIDGW_DATA_DIR"]).expanduser()
        if env.get("HYBRIDGW_ADMIN_KEY"):
            values["admin_key"] = env["HYBRIDGW_ADMIN_KEY"]
        if env.get("HYBRIDGW_POLICY"):
            values["policy_file"] = Path(env["HYBRIDGW_POLICY"]).expanduser()
        for name, key, kind in _NUMBERS:
            value = env_number(env, name, kind)
            if value is not None:
                values[key] = value
        # read where they are used (observability/tracing.py, gateway/heap_dump.py), checked here before anything starts
        env_number(env, "HYBRIDGW_HEAP_DUMP_FRAMES", int)
        if (env_number(env, "HYBRIDGW_TRACE_SAMPLE_RATIO", float) or 0.0) > 1:
            raise SettingsError(f"HYBRIDGW_TRACE_SAMPLE_RATIO={env['HYBRIDGW_TRACE_SAMPLE_RATIO']!r} is not a number "
                                "from 0 to 1")
        if env.get("REDIS_URL"):
            values["redis_url"] = env["REDIS_URL"]
        if env.get("HYBRIDGW_ACCESS_LOG", "").lower() in ("0", "false", "no"):
            values["access_log"] = False
        if env.get("HYBRIDGW_METRICS_PUBLIC", "").lower() in ("1", "true", "yes"):
            values["metrics_public"] = True
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)
