"""The console's policy view, admin key only: GET /console/api/policy (the policy in force: its version,
source, last refused reload, rules, aliases and backends — no keys or URLs' secrets) and POST
/console/api/explain {"team", "body", "headers"?}: the facts and the decision the gateway would make for
that request now, against its live engine state. Nothing is sent; no probe is claimed (decide() is pure)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.admin_access import require_admin
from gateway.errors import GatewayError, InvalidRequest, routing_refusal
from gateway.request_body import read_json_body
from gateway.routes.ui_api import fail, json_response
from gateway.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from gateway.token_count import measure_prompt
from policies.decide import decide
from policies.errors import RoutingError


async def policy(request: Request) -> Response:
    try:
        svc = await require_admin(request)
    except GatewayError as exc:
        return fail(request, exc)
    parts = getattr(request.app.state, "readiness", None)
    state = parts.reloader.state() if parts is not None and parts.reloader is not None else None
    p = svc.policy.current.policy
    return json_response({
        "version": state.version if state else None, "source": state.source if state else None,
        "loaded_at": state.loaded_at if state else None, "reloads": state.reloads if state else 0,
        "last_reload_error": state.last_error if state else None,
        "rules": [{"name": r.name, "strategy": getattr(r, "strategy", "first_match"), "shadow": r.shadow,
                   "description": r.description} for r in p.rules],
        "models": {alias: [{"backend": d.backend, "model": d.model} for d in m.deployments] for alias, m in p.models.items()},
        "backends": {name: {"kind": b.kind, "state": b.state_source} for name, b in p.backends.items()},
        "unknown_teams": p.unknown_teams,
    })


def _explain_input(data: Any) -> tuple[str, dict[str, Any], dict[str, str]]:
    if not isinstance(data, dict) or not isinstance(data.get("body"), dict) or not isinstance(data.get("team"), str):
        raise InvalidRequest('Send {"team": "T", "body": {<a chat or completions request>}, "headers": {...}}.',
                             param="body", code="invalid_value")
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise InvalidRequest("headers must map names to strings.", param="headers", code="invalid_value")
    return data["team"], data["body"], {str(k).lower(): v for k, v in headers.items()}


async def explain(request: Request) -> Response:
    try:
        svc = await require_admin(request)
        team, body, headers = _explain_input(await read_json_body(request, svc.settings.max_body_bytes))
        if team not in svc.policy.current.policy.teams:
            raise InvalidRequest(f"Team {team!r} is not in the policy.", param="team", code="unknown_team")
        svc.catalog.check_alias(team, str(body.get("model", "")))  # unknown / not allowed: the request's own error
        # then checked as the request itself would be: an unchecked max_tokens × n (2**64 each) broke the JSON
        parse_body(ChatCompletionRequest if "messages" in body else CompletionRequest, body)
        compiled = svc.policy.current
        try:
            tokens, scores = await measure_prompt(svc.decider, compiled, body, team, off_loop=True)
            live = svc.live.live_state()
            facts = svc.decider.build_facts(body, team, headers=headers, compiled=compiled, prompt_tokens=tokens,
                                            live=live, scores=scores)
        except RoutingError as exc:
            raise routing_refusal(exc, str(body.get("model", ""))) from None
        decision = decide(compiled, facts, live)
    except GatewayError as exc:
        return fail(request, exc)
    return json_response({"facts": asdict(facts), "decision": asdict(decision)})


ROUTES = [Route("/console/api/policy", policy, methods=["GET"]),
          Route("/console/api/explain", explain, methods=["POST"])]
