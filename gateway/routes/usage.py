"""GET /v1/usage, mounted from observability's route: a team's key reads its own team, the admin
key any team; the all-hosted comparison prices each alias at its hosted deployment."""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Route

from gateway.auth import authorization, is_admin
from gateway.errors import GatewayError, error_info
from gateway.report_prices import chargeback_policy, policy_hosted_price
from gateway.services import Services
from observability.stores import UsageStore
from observability.usage_api import UsageCaller, usage_route


async def usage_caller(request: Request) -> UsageCaller:
    svc: Services = request.app.state.services
    try:
        header = authorization(request.headers)
        if is_admin(header, svc.settings.admin_key):
            return UsageCaller(team=None, is_admin=True)
        return UsageCaller(team=(await svc.authenticate(header)).team)
    except GatewayError as exc:  # the app's HTTPException handler answers it OpenAI-shaped
        raise HTTPException(error_info(exc).status, exc.message) from None


def usage_routes(store: UsageStore, services: Services) -> list[Route]:
    return [usage_route(store, usage_caller, hosted_price=policy_hosted_price(lambda: services.policy.current),
                        chargeback_policy=lambda: chargeback_policy(services.policy.current))]
