"""REDIS_URL parsing for Redis Cluster and the per-team hash tag (no sockets)."""
from __future__ import annotations

import redis

from observability.redis_clients import _nodes, is_cluster, sync_client, team_tag


def test_a_cluster_url_names_its_first_node_plainly_and_the_others_as_startup_nodes() -> None:
    assert is_cluster("redis+cluster://h1:7000") and is_cluster("REDISS+CLUSTER://h1:7000")
    assert not is_cluster("redis://h1:6379/0") and not is_cluster("unix:///tmp/redis.sock")
    assert _nodes("redis+cluster://u:p@h1:7000,h2:7001,h3/0") == ("redis://u:p@h1:7000/0", [("h2", 7001), ("h3", 6379)])
    assert _nodes("rediss+cluster://h1:7000") == ("rediss://h1:7000", [])


def test_a_plain_url_still_makes_the_one_server_client() -> None:
    client = sync_client("redis://127.0.0.1:1/0")  # no connection is made until a command runs
    assert type(client) is redis.Redis
    client.close()


def test_the_tag_holds_the_whole_team_name_whatever_it_contains() -> None:
    assert team_tag("red") == "{red}"
    # a brace in the name would end the tag early: two teams could then share a slot by accident,
    # or one team's keys fall into several
    assert team_tag("a}b{c") == "{a%7Db%7Bc}" and team_tag("a:b") == "{a%3Ab}"
