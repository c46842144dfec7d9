"""What this gateway can serve: the policy's backends resolved against the environment, and the
aliases whose deployments point at backends that are present. Pure (environment passed in)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.errors import ModelNotFound
from policies.decision import Target
from policies.schema import BackendSpec, Policy, Timeouts


@dataclass(frozen=True)
class ResolvedBackend:
    name: str
    kind: str  # a key of policies.backend_kinds.BACKEND_KINDS
    base_url: str | None  # with the /v1 suffix for OpenAI-compatible servers
    api_key: str | None
    model_prefix: str | None  # litellm: provider prefix (e.g. "anthropic"); engine: model it loads
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 256


@dataclass(frozen=True)
class AliasEntry:
    targets: tuple[Target, ...]
    teams: frozenset[str] | None  # None: every team


@dataclass(frozen=True)
class Catalog:
    backends: Mapping[str, ResolvedBackend]
    aliases: Mapping[str, AliasEntry]
    absent: Mapping[str, str] = field(default_factory=dict)  # backend name → why it is absent

    def may_use(self, team: str, alias: str) -> bool:
        entry = self.aliases.get(alias)
        return entry is not None and (entry.teams is None or team in entry.teams)

    def check_alias(self, team: str, alias: str) -> AliasEntry:
        """The alias's entry, or ModelNotFound (also when the team may not use it: no leak)."""
        if not self.may_use(team, alias):
            raise ModelNotFound(alias)
        return self.aliases[alias]

    def models_for(self, team: str) -> list[str]:
        return [alias for alias in self.aliases if self.may_use(team, alias)]


def _resolve(name: str, spec: BackendSpec, env: Mapping[str, str],
             engine_urls: Mapping[str, str]) -> ResolvedBackend | str:
    """The resolved backend, or the reason it is absent."""
    if spec.requires_env and not env.get(spec.requires_env):
        return f"{spec.requires_env} is not set"
    base_url = env.get(spec.base_url_env) if spec.base_url_env and env.get(spec.base_url_env) else spec.base_url
    if spec.spawned and base_url is None:
        base_url = engine_urls.get(name)
        if base_url is None:
            return "engine not started"
    if spec.kind_info.needs_base_url and not base_url:
        return f"{spec.kind} backend without base_url"
    api_key = spec.api_key
    if spec.api_key_env and env.get(spec.api_key_env):
        api_key = env[spec.api_key_env]
    return ResolvedBackend(name=name, kind=spec.kind, base_url=base_url.rstrip("/") if base_url else None,
                           api_key=api_key, model_prefix=spec.model, timeouts=spec.timeouts,
                           max_connections=spec.max_connections)


def build_catalog(policy: Policy, env: Mapping[str, str],
                  engine_urls: Mapping[str, str] | None = None) -> Catalog:
    backends: dict[str, ResolvedBackend] = {}
    absent: dict[str, str] = {}
    for name, spec in policy.backends.items():
        resolved = _resolve(name, spec, env, engine_urls or {})
        if isinstance(resolved, str):
            absent[name] = resolved
        else:
            backends[name] = resolved
    aliases: dict[str, AliasEntry] = {}
    for alias, entry in policy.models.items():
        targets = tuple(Target(d.backend, d.model) for d in entry.deployments if d.backend in backends)
        if targets:
            aliases[alias] = AliasEntry(targets, None if entry.teams is None else frozenset(entry.teams))
    return Catalog(backends=backends, aliases=aliases, absent=absent)
