"""GET /console: the admin web console, one static page and one script shipped as package data
(gateway/ui/). The page holds no data and needs no key; every number comes from the JSON API with the
key the operator typed in (docs/security.md). A strict CSP: scripts only from this origin, no inline
script, no other host — so text from keys, tags or teams can only ever render as text."""
from __future__ import annotations

from importlib.resources import files

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
       "img-src 'self' data:; frame-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "x-frame-options": "DENY", "cache-control": "no-store"}


def _asset(name: str) -> bytes:
    return (files("gateway") / "ui" / name).read_bytes()


def console_routes() -> list[Route]:
    """The page and its script, read once when the app is built (never at import)."""
    page, script = _asset("console.html"), _asset("console.js")

    async def console(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def console_js(request: Request) -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8", headers=_HEADERS)

    async def to_console(request: Request) -> Response:
        return RedirectResponse("/console", status_code=308)

    return [Route("/console", console, methods=["GET"]), Route("/console/console.js", console_js, methods=["GET"]),
            Route("/console/", to_console, methods=["GET"]), Route("/ui", to_console, methods=["GET"])]
