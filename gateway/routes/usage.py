"""GET /v1/usage, mounted from observability's route: a team's key reads its own team, the admin
key any team; the all-hosted comparison prices each alias at its hosted deployment."""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.auth import authorization, is_admin
from gateway.errors import GatewayError
from gateway.exchange import unrecorded_id_headers
from gateway.proxy import error_response
from gateway.report_prices import chargeback_policy, policy_hosted_price
from gateway.services import Services
from observability.stores import UsageStore
from observability.usage_api import UsageCaller, usage_route


class CallerRefused(Exception):
    """The caller's key was refused: answered from the error table (status, type, param and code), as on
    every other route, not through Starlette's HTTPException (a message only)."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


async def usage_caller(request: Request) -> UsageCaller:
    svc: Services = request.app.state.services
    try:
        header = authorization(request.headers)
        if is_admin(header, svc.settings.admin_key):
            return UsageCaller(team=None, is_admin=True)
        return UsageCaller(team=(await svc.authenticate(header)).team)
    except GatewayError as exc:
        raise CallerRefused(exc) from None


def usage_routes(store: UsageStore, services: Services) -> list[Route]:
    route = usage_route(store, usage_caller, hosted_price=policy_hosted_price(lambda: services.policy.current),
                        chargeback_policy=lambda: chargeback_policy(services.policy.current))
    get_usage = route.endpoint

    async def endpoint(request: Request) -> Response:
        try:
            return await get_usage(request)
        except CallerRefused as refused:
            return error_response(unrecorded_id_headers(request.headers.get("x-request-id")), refused.error)

    return [Route(route.path, endpoint, methods=["GET"])]
