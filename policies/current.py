"""The policy in force: the compiled policy a request pins for its whole life, and the shadow policy
whose decisions are recorded, never applied. Swapped whole on reload (one attribute store each)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.compiled import CompiledPolicy, compile_policy
from policies.loader import LoadedPolicy
from policies.schema import Policy


def compile_any(policy: Policy | LoadedPolicy, table: Mapping[str, Any]) -> CompiledPolicy:
    """Compile a bare Policy or a loaded file (its source, absent backends and performance model kept)."""
    if isinstance(policy, LoadedPolicy):
        return compile_policy(policy.policy, table, policy.source, policy.absent_backends,
                              perf_model=policy.perf_model)
    return compile_policy(policy, table)


@dataclass
class CurrentPolicy:
    """Read `current` once per request and keep it: a reload replaces it, never mutates it."""

    current: CompiledPolicy
    shadow: CompiledPolicy | None = None

    @property
    def policy(self) -> Policy:
        return self.current.policy
