"""One HTTP style in the gateway: plain Starlette (app, routes, /v1/usage's route), no FastAPI layer
anywhere on its request path (its middleware stack cost every request ~7 µs for nothing: OpenAPI was off
and every handler reads its own body and answers OpenAI-shaped errors itself). The engine's own server
(local_engine) is a separate app and keeps FastAPI."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
GATEWAY_FILES = [*sorted((REPO / "gateway").rglob("*.py")), REPO / "observability" / "usage_api.py"]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_gateway_module_imports_fastapi() -> None:
    offenders = [str(p.relative_to(REPO)) for p in GATEWAY_FILES
                 if any(n == "fastapi" or n.startswith("fastapi.") for n in _imported(p))]
    assert offenders == []


def test_the_usage_route_is_a_plain_starlette_route() -> None:
    from starlette.routing import Route

    from observability.usage_api import UsageCaller, usage_route

    async def caller(request: object) -> UsageCaller:
        return UsageCaller(team="red")

    route = usage_route(store=None, caller=caller)  # type: ignore[arg-type]  # never called here
    assert type(route) is Route and route.path == "/v1/usage" and route.methods == {"GET", "HEAD"}
