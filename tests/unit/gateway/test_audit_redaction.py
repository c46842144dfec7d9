"""An upstream's error message loses the backend's own key, and only a key long enough to be one."""
from __future__ import annotations

from gateway.errors import UpstreamError, redacted


def test_an_echoed_key_is_redacted_and_a_short_one_garbles_nothing() -> None:
    echoed = UpstreamError("upstream x returned 401: Bearer sk-provider-123", backend="x", upstream_status=401)
    assert redacted(echoed, "sk-provider-123").message == "upstream x returned 401: Bearer [redacted]"
    short = UpstreamError("fake in-band error after 0 chunks", backend="x")
    assert redacted(short, "k").message == "fake in-band error after 0 chunks"
    assert redacted(short, None).message == "fake in-band error after 0 chunks"
