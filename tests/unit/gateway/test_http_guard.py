"""The total connection bound leaves half the open-file limit to the ledger, keys and upstreams."""
from __future__ import annotations

import resource

from gateway.http_guard import connection_limit


def test_the_total_is_at_most_half_the_open_file_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_limit(5) == 5
    if soft != resource.RLIM_INFINITY:
        assert connection_limit(10**9) == soft // 2
