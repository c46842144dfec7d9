"""The console's "now" view counts the clients' requests: a shadow call (rule `shadow`) is spend, not
a request, so it changes neither the rate, the local share nor the latency shown."""
from __future__ import annotations

from dataclasses import replace

from gateway.routes.ui_api import last_minute
from observability.usage import SHADOW_RULE
from tests.unit.observability.conftest import record


def test_shadow_calls_are_not_requests_in_the_last_minute() -> None:
    served = [replace(record(), backend="up", ttft_s=0.2, status="ok") for _ in range(3)]
    shadow = [replace(record(), backend="gpu", rule=SHADOW_RULE, ttft_s=None, e2e_s=40.0, status=s)
              for s in ("ok", "ok", "error")]
    now = last_minute([*served, *shadow], local={"gpu"}, window_s=60.0)
    assert (now["requests"], now["share_local"], now["errors"]) == (3, 0.0, 0)
    assert now["requests_per_s"] == 3 / 60 and now["ttft_p95_s"] == 0.2
