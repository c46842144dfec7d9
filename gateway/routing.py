"""The static route: an alias's deployments in their configured order. The policy engine's
`decide()` replaces it through `create_app(route_fn=...)`."""
from __future__ import annotations

from collections.abc import Callable

from gateway.catalog import Catalog
from policies.decision import RequestFacts, RouteDecision

RouteFn = Callable[[RequestFacts], RouteDecision]


def static_route(catalog: Catalog) -> RouteFn:
    # Decisions are frozen and depend on the alias only, so build each once.
    decisions = {
        alias: RouteDecision(targets=entry.targets, rule="default",
                             reason=f"alias {alias!r}: its deployments in configured order")
        for alias, entry in catalog.aliases.items()
    }

    def route(facts: RequestFacts) -> RouteDecision:
        return decisions.get(facts.model_alias) or RouteDecision((), "default", "alias has no deployments")

    return route
