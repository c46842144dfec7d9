"""The Redis store keeps a record's `structured_output` (the field that asked for constrained output), which the
replay reads to route such a request as the gateway did (a real redis-server)."""
from __future__ import annotations

from observability.redis_store import RedisStore
from tests.support.redis_server import RedisServer
from tests.unit.observability.conftest import T0, record


def test_the_field_round_trips_through_redis(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url)
    assert store.write_batch([record(request_id="json", structured_output="response_format"),
                              record(request_id="plain")]) == 2
    found = {r.request_id: r.structured_output for r in store.records("alpha", T0 - 1, T0 + 1)}
    assert found == {"json": "response_format", "plain": ""}
    store.close()
