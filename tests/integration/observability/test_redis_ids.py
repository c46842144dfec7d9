"""The Redis store keys records by the gateway's id: one client x-request-id repeated across teams
keeps every record (a real redis-server)."""
from __future__ import annotations

from observability.redis_store import RedisStore
from tests.support.redis_server import RedisServer
from tests.unit.observability.conftest import T0, record


def test_one_client_id_across_teams_keeps_every_record(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url)
    batch = [record(team=team, client_request_id="shared") for team in ("alpha", "alpha", "beta")]
    assert store.write_batch(batch) == 3
    assert store.write_batch(batch) == 0  # replays of the same records still add nothing
    alpha, beta = store.records("alpha", T0 - 1, T0 + 1), store.records("beta", T0 - 1, T0 + 1)
    assert (len(alpha), len(beta)) == (2, 1)
    assert {r.client_request_id for r in alpha + beta} == {"shared"}
    store.close()
