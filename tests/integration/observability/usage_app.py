"""A small real app for the /v1/usage tests: the usage route over the store in $HYBRIDGW_DATA_DIR,
behind bearer keys from $USAGE_TEST_KEYS (JSON {key: team, or "*" for the admin key}).

  python -m uvicorn --factory tests.integration.observability.usage_app:create --port 8000
"""
from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request

from observability.report import HostedCost
from observability.stores import default_data_dir
from observability.usage_api import UsageCaller, usage_route
from observability.wiring import open_store


def hosted_price(model: str, prompt: int, completion: int) -> HostedCost:
    return HostedCost(prompt * 1e-6 + completion * 2e-6, "test $1 in, $2 out per Mtok")


def create() -> Starlette:
    store = open_store(os.environ.get("REDIS_URL"), default_data_dir())
    keys: dict[str, str] = json.loads(os.environ["USAGE_TEST_KEYS"])

    async def caller(request: Request) -> UsageCaller:
        team = keys.get((request.headers.get("authorization") or "").removeprefix("Bearer ").strip())
        if team is None:
            raise HTTPException(401, "unknown key")
        return UsageCaller(team=None, is_admin=True) if team == "*" else UsageCaller(team=team)

    return Starlette(routes=[usage_route(store, caller, hosted_price=hosted_price)])
