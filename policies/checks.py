"""Cross-reference checks a schema cannot express: every name a policy uses must be defined
(problems: the file is refused), and what is valid but likely a mistake (warnings: `policy check`
prints them, the gateway still loads the file)."""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.estimator import hosted_price
from policies.rule_schema import Cmp, RuleBase, When
from policies.schema import Policy

Problem = tuple[tuple[str | int, ...], str]


def _unknown(kind: str, name: str, known: list[str]) -> str:
    allowed = ", ".join(sorted(known)) or "none defined"
    return f"unknown {kind} {name!r}; defined: {allowed}"


def _deployment_problems(policy: Policy) -> Iterator[Problem]:
    for alias, spec in policy.models.items():
        for i, dep in enumerate(spec.deployments):
            if dep.backend not in policy.backends:
                yield ("models", alias, "deployments", i, "backend"), _unknown("backend", dep.backend, list(policy.backends))


def _team_problems(policy: Policy) -> Iterator[Problem]:
    for name, team in policy.teams.items():
        if team.slo is not None and team.slo not in policy.slos:
            yield ("teams", name, "slo"), _unknown("slo", team.slo, list(policy.slos))
        for i, backend in enumerate(team.allowed_backends or ()):
            if backend not in policy.backends:
                yield ("teams", name, "allowed_backends", i), _unknown("backend", backend, list(policy.backends))
        for i, backend in enumerate(team.shadow.backends if team.shadow else ()):
            if backend not in policy.backends:
                yield ("teams", name, "shadow", "backends", i), _unknown("backend", backend, list(policy.backends))


def _when_problems(policy: Policy, when: When, path: tuple[str | int, ...]) -> Iterator[Problem]:
    for backend in when.state:
        if backend not in policy.backends:
            yield (*path, "state", backend), _unknown("backend", backend, list(policy.backends))
    if when.model is not None:
        names = [when.model.eq, when.model.ne, *(when.model.in_ or ()), *(when.model.not_in or ())]
        for name in names:
            if name is not None and name not in policy.models:
                yield (*path, "model"), _unknown("model alias", str(name), list(policy.models))
    if when.category is not None:
        c = when.category
        for name in (c.eq, c.ne, *(c.in_ or ()), *(c.not_in or ())):
            if name is not None and name not in policy.categories:
                yield (*path, "category"), _unknown("category", str(name), list(policy.categories))
    for i, alt in enumerate(when.any or ()):
        yield from _when_problems(policy, alt, (*path, "any", i))


def _rule_problems(policy: Policy, i: int, rule: RuleBase) -> Iterator[Problem]:
    path: tuple[str | int, ...] = ("rules", i)
    for field in rule.target_fields:
        for j, backend in enumerate(getattr(rule, field)):
            if backend not in policy.backends:
                yield (*path, field, j), _unknown("backend", backend, list(policy.backends))
            elif field in rule.engine_fields and policy.backends[backend].state_source == "none":
                yield (*path, field, j), (
                    f"backend {backend!r} reports no engine state, so {getattr(rule, 'strategy', '')} cannot "
                    "tell whether a "
                    "request fits; use a backend of kind engine, or set its `state: hybridgw|vllm`"
                )
    for field in rule.slo_fields:
        slo = getattr(rule, field)
        if slo is not None and slo not in policy.slos:
            yield (*path, field), _unknown("slo", slo, list(policy.slos))
    yield from _when_problems(policy, rule.when, (*path, "when"))


def policy_problems(policy: Policy) -> list[Problem]:
    """All dangling references and duplicate rule names, each with the path of the offending field."""
    problems = [*_deployment_problems(policy), *_team_problems(policy)]
    seen: dict[str, int] = {}
    for i, rule in enumerate(policy.rules):
        if rule.name in seen:
            problems.append((("rules", i, "name"), f"duplicate rule name {rule.name!r} (also rules[{seen[rule.name]}])"))
        seen.setdefault(rule.name, i)
        problems.extend(_rule_problems(policy, i, rule))
    for name, examples in policy.categories.items():
        if not any(e.strip() for e in examples):
            problems.append((("categories", name), "a category needs at least one non-empty example prompt"))
    for name, backend in policy.backends.items():
        problem = backend.kind_info.base_url_problem(backend.kind, backend.base_url or backend.base_url_env)
        if problem is not None:
            problems.append((("backends", name, "base_url"), problem))
    if policy.unknown_teams == "default" and "default" not in policy.teams:
        message = "`unknown_teams: default` serves unknown teams as team `default`; define it under `teams:`"
        problems.append((("unknown_teams",), message))
    return problems


def dotted(loc: tuple[str | int, ...]) -> str:
    """("rules", 2, "when") → rules[2].when, as the loader's messages write a field's path."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _named_teams(cmp: Cmp | None) -> list[str]:
    if cmp is None:
        return []
    names = [cmp.eq, cmp.ne, *(cmp.in_ or ()), *(cmp.not_in or ())]
    return [str(n) for n in names if n is not None]


def _routed_teams(when: When) -> list[str]:
    """Teams a rule is limited to (team: X or team: [X, Y]); [] when it may match any team."""
    if when.team is None:
        return []
    return [str(n) for n in [when.team.eq, *(when.team.in_ or ())] if n is not None]


def _team_warnings(policy: Policy, when: When, path: tuple[str | int, ...]) -> Iterator[Problem]:
    for name in _named_teams(when.team):
        if name not in policy.teams:
            yield (*path, "team"), f"names team {name!r}, which `teams` does not define; it never matches a key"
    for i, alt in enumerate(when.any or ()):
        yield from _team_warnings(policy, alt, (*path, "any", i))


def _allowed_warnings(policy: Policy, i: int, rule: RuleBase) -> Iterator[Problem]:
    for name in _routed_teams(rule.when):
        allowed = policy.teams[name].allowed_backends if name in policy.teams else None
        outside = [b for b in rule.backends() if allowed is not None and b not in allowed]
        if outside:
            yield ("rules", i), (f"routes team {name!r} to {outside}, outside its allowed_backends {allowed}; "
                                 "those targets are never used for it")


def _price_warnings(policy: Policy, price_table: Mapping[str, Any]) -> Iterator[Problem]:
    for alias, spec in policy.models.items():
        for j, dep in enumerate(spec.deployments):
            backend = policy.backends.get(dep.backend)
            if backend is None or backend.state_source != "none":
                continue  # engines cost what their price (or $0) says; only hosted models need one
            if hosted_price(dep.model, policy.prices, price_table, backend.price) is None:
                yield ("models", alias, "deployments", j), (
                    f"hosted model {dep.model!r} on {dep.backend!r} has no price (not in `prices`, the backend's "
                    "`price` or litellm's table): its requests cost $0, so no budget is ever charged for them")


def policy_warnings(policy: Policy, price_table: Mapping[str, Any]) -> list[Problem]:
    """Valid but likely wrong: rules naming teams that do not exist, rules routing a team outside
    its allowed_backends, hosted models nobody prices. `price_table`: litellm's."""
    warnings: list[Problem] = []
    for i, rule in enumerate(policy.rules):
        warnings.extend(_team_warnings(policy, rule.when, ("rules", i, "when")))
        warnings.extend(_allowed_warnings(policy, i, rule))
        warnings.extend((("rules", i, field), message) for field, message in rule.warnings(policy))
    for alias, spec in policy.models.items():
        for name in spec.teams or ():
            if name not in policy.teams:
                warnings.append((("models", alias, "teams"), f"names team {name!r}, which `teams` does not define"))
    warnings.extend(_price_warnings(policy, price_table))
    return warnings
