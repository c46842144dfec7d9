"""A policy prepared for the hot path: rules as condition closures, aliases indexed by backend,
hosted prices looked up once. Built at load (and reload) time; never per request."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from policies.conditions import Condition, compile_when
from policies.decision import Target
from policies.estimator import TokenPrice, hosted_price, local_price
from policies.perf_model import PerfModel
from policies.rule_schema import RuleBase, When
from policies.schema import BackendSpec, Policy, Price, Team
from policies.shadow_spec import ShadowSpec
from policies.strategies import STRATEGY_TYPES, Context, Outcome
from policies.tokens import encoding_name_for


@dataclass(frozen=True)
class CompiledRule:
    name: str
    spec: RuleBase  # one member of the Rule union (policies.strategies)
    conditions: tuple[Condition, ...]

    @cached_property
    def shadow(self) -> bool:
        return self.spec.shadow

    @cached_property
    def strategy(self) -> Callable[[Any, Context], Outcome | None]:
        """The rule's strategy function (STRATEGY_TYPES, looked up once per rule, not per request)."""
        return STRATEGY_TYPES[self.spec.strategy].decide


@dataclass(frozen=True)
class AliasInfo:
    """One model alias: its deployments in order, by backend, and the encoding to count with."""

    name: str
    targets: tuple[Target, ...]
    by_backend: Mapping[str, Target]
    encoding: str  # the first hosted deployment's family; cl100k_base when all are local
    teams: frozenset[str] | None


def calibration_key(target: Target, encoding: str) -> str:
    """Ratios are learned per target model and per encoding our count was made with."""
    return f"{target.backend}/{target.model}@{encoding}"


@dataclass(frozen=True, slots=True)
class AliasBackend:
    """What build_facts needs of one backend of an alias that depends on the policy alone (looked up
    once per compiled policy, not per request)."""

    backend: str
    target: Target
    spec: BackendSpec
    calibration_key: str  # calibration_key(target, the alias's encoding)
    engine: bool
    local_price: Price | None  # engines: the model's price in the policy, else the backend's
    hosted_price: TokenPrice | None  # hosted: from hosted_prices
    max_tokens_default: int | None = None  # spec.max_tokens_default (a property chain, asked per request)
    # Engines: local_price(local_price, snapshot) when that does not depend on the snapshot (no price,
    # or one per token); per_gpu_hour: it does ($/hour ÷ the measured rates), so build_facts asks.
    fixed_local_price: TokenPrice | None = None
    per_gpu_hour: bool = False


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    rules: tuple[CompiledRule, ...]
    aliases: Mapping[str, AliasInfo]
    engines: frozenset[str]  # backends with polled state (ours or vLLM)
    hosted_prices: Mapping[tuple[str, str], TokenPrice]  # (backend, model) → price, hosted only
    source: str = "<policy>"
    absent_backends: tuple[str, ...] = ()
    empty_team: Team = field(default_factory=Team)
    team_by_key_hash: Mapping[str, str] = field(default_factory=dict)  # sha256 hex of a key → team
    uses_difficulty: bool = False  # a rule looks at `difficulty`: only then is the prompt scored
    uses_category: bool = False  # a rule looks at `category` (semantic routes)
    # Priors for predicted TTFT (slo_cost) where live state and observations say nothing.
    perf_model: PerfModel = field(default_factory=lambda: PerfModel({}, {}))

    @property
    def difficulty_weights(self) -> Path | None:
        """The policy's `difficulty_weights` file, relative to the policy file (None: the shipped one)."""
        named = self.policy.difficulty_weights
        if named is None:
            return None
        path = Path(named).expanduser()
        return path if path.is_absolute() or self.source.startswith("<") else Path(self.source).parent / path

    def team(self, name: str) -> Team:
        """The team's policy settings; teams not listed (e.g. created by `hybridgw keys`) get defaults."""
        return self.policy.teams.get(name, self.empty_team)

    def hosted_deployment(self, alias: str) -> tuple[Target, TokenPrice] | None:
        """The alias's first priced hosted deployment and its price: what the alias's tokens would
        have cost all-hosted (/v1/usage and `hybridgw report`); None when it has none."""
        info = self.aliases.get(alias)
        for target in info.targets if info is not None else ():
            price = self.hosted_prices.get((target.backend, target.model))
            if price is not None:
                return target, price
        return None

    def usable(self, alias: AliasInfo, team: str) -> frozenset[str]:
        """The alias's backends the team may use (its allowed_backends), remembered per (alias, team):
        both are fixed for this compiled policy (teams are those of the gateway's keys: a few)."""
        key = (alias.name, team)
        found = self._usable.get(key)
        if found is None:
            allowed = self.team(team).allowed_backends
            found = self._usable[key] = frozenset(b for b in alias.by_backend if allowed is None or b in allowed)
        return found

    @cached_property
    def _usable(self) -> dict[tuple[str, str], frozenset[str]]:
        return {}

    @cached_property
    def memo(self) -> dict[Any, Any]:
        """What strategies derive from this policy alone, per request key (e.g. slo_cost's candidates and
        SLO per team): kept as long as the policy, which a reload replaces."""
        return {}

    @cached_property
    def shadowed_teams(self) -> Mapping[str, ShadowSpec]:
        """Teams whose `shadow` samples anything (share > 0): the request path asks this, once per request."""
        return {name: t.shadow for name, t in self.policy.teams.items() if t.shadow is not None and t.shadow.share > 0}

    @cached_property
    def uses_prefix_index(self) -> bool:
        """A rule needs the prompt's prefix keys (prefix_affinity): asked per request, answered once."""
        return any(rule.spec.uses_prefix_index for rule in self.rules)

    @cached_property
    def alias_engines(self) -> Mapping[str, tuple[str, ...]]:
        """Alias → its backends with polled state (fairness notes a team's demand on them per request)."""
        return {name: tuple(d.backend for d in rows if d.engine) for name, rows in self.deployments.items()}

    @cached_property
    def deployments(self) -> Mapping[str, tuple[AliasBackend, ...]]:
        """Alias → its backends' per-policy facts, in by_backend order. Cached on this object, which
        a reload replaces: never stale. (A frozen dataclass still has the __dict__ this writes to.)"""
        out = {}
        for name, alias in self.aliases.items():
            rows = []
            for backend, target in alias.by_backend.items():
                spec, engine = self.policy.backends[backend], backend in self.engines
                local = (self.policy.prices.get(target.model) or spec.price) if engine else None
                hourly = local is not None and local.input_usd_per_mtok is None \
                    and local.output_usd_per_mtok is None and local.usd_per_gpu_hour is not None
                rows.append(AliasBackend(
                    backend, target, spec, calibration_key(target, alias.encoding), engine, local,
                    None if engine else self.hosted_prices.get((backend, target.model)),
                    spec.max_tokens_default, None if hourly else local_price(local, None), hourly))
            out[name] = tuple(rows)
        return out


def _alias(name: str, policy: Policy, engines: frozenset[str]) -> AliasInfo:
    spec = policy.models[name]
    targets = tuple(Target(d.backend, d.model) for d in spec.deployments)
    by_backend: dict[str, Target] = {}
    for target in targets:
        by_backend.setdefault(target.backend, target)
    hosted = [t.model for t in targets if t.backend not in engines]
    encoding = encoding_name_for(hosted[0]) if hosted else "cl100k_base"
    return AliasInfo(name, targets, by_backend, encoding, frozenset(spec.teams) if spec.teams is not None else None)


def _when_uses(when: When, fact: str) -> bool:
    return getattr(when, fact) is not None or any(_when_uses(alt, fact) for alt in when.any or ())


def compile_policy(policy: Policy, price_table: Mapping[str, Any] | None = None, source: str = "<policy>",
                   absent_backends: tuple[str, ...] = (), perf_model: PerfModel | None = None) -> CompiledPolicy:
    """Prepare `policy` for decide(); `price_table` is litellm's (see estimator.litellm_price_table);
    `perf_model`: the backends' performance model (policies.perf_model), else its defaults."""
    engines = frozenset(n for n, b in policy.backends.items() if b.state_source != "none")
    aliases = {name: _alias(name, policy, engines) for name in policy.models}
    prices: dict[tuple[str, str], TokenPrice] = {}
    for alias in aliases.values():
        for target in alias.targets:
            if target.backend in engines:
                continue
            price = hosted_price(target.model, policy.prices, price_table or {}, policy.backends[target.backend].price)
            if price is not None:
                prices[(target.backend, target.model)] = price
    rules = tuple(CompiledRule(r.name, r, tuple(compile_when(r.when))) for r in policy.rules)
    keys = {h.removeprefix("sha256:"): name for name, team in policy.teams.items() for h in team.key_hashes}
    difficulty = any(r.uses_difficulty or _when_uses(r.when, "difficulty") for r in policy.rules)
    category = any(_when_uses(r.when, "category") for r in policy.rules)
    return CompiledPolicy(policy, rules, aliases, engines, prices, source, absent_backends, Team(), keys, difficulty,
                          category, perf_model or PerfModel({}, {}))
