"""Who may call the admin surface (/admin/keys, /console/api): the admin key. A caller without it
gets 401, unless it is a team's valid key: then 403 (known, but not allowed), so the console can
tell a team key from a typo."""
from __future__ import annotations

from starlette.requests import Request

from gateway.auth import authorization, is_admin
from gateway.errors import AuthError, PermissionDenied
from gateway.services import Services

_NEED_ADMIN = "Admin endpoints need the admin key (HYBRIDGW_ADMIN_KEY) as the bearer token."


async def require_admin(request: Request) -> Services:
    """The app's services when the bearer is the admin key; AuthError (401) or PermissionDenied (403)."""
    svc: Services = request.app.state.services
    header = authorization(request.headers)  # two: InvalidRequest (400)
    if is_admin(header, svc.settings.admin_key):
        return svc
    try:
        await svc.authenticate(header)  # a store outage stays a 503 (ServiceUnavailable)
    except AuthError:  # no key, an unknown, expired or revoked one
        raise AuthError(_NEED_ADMIN, code="invalid_admin_key") from None
    except PermissionDenied:  # a key of a team the policy no longer names: known, still not admin
        pass
    raise PermissionDenied(f"{_NEED_ADMIN} A team's key may not call them.", code="admin_key_required")
