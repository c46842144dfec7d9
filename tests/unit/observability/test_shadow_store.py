"""The embedded pair store: per team, newest `cap` kept, one team never sees another's pairs, a pair
round-trips whole (both answers, the prompt, the score)."""
from __future__ import annotations

from pathlib import Path

from observability.shadow_pairs import Answer, ShadowPair
from observability.shadow_store_sqlite import SqlitePairStore


def pair(team: str, i: int) -> ShadowPair:
    return ShadowPair(f"req_{i}", team, 1000.0 + i, "m", [{"role": "user", "content": f"q{i}"}],
                      Answer("weak", "m", f"weak {i}", "ok", 0.1, 5, 4),
                      Answer("strong", "m2", f"strong {i}", "ok", 0.3, 5, 7, usage_source="counted"),
                      ("weak", "strong"), difficulty=0.25, category="code", stream=True)


def test_pairs_round_trip_per_team_newest_kept(tmp_path: Path) -> None:
    store = SqlitePairStore.in_data_dir(tmp_path)
    for i in range(5):
        store.add(pair("red", i), cap=3)
    store.add(pair("blue", 99), cap=3)
    store.add(pair("red", 4), cap=3)  # the same request twice: kept once
    got = store.pairs("red")
    assert [p.request_id for p in got] == ["req_2", "req_3", "req_4"]  # oldest first, the cap newest
    assert got[0] == pair("red", 2)
    assert [p.request_id for p in store.pairs("red", 2)] == ["req_3", "req_4"]
    assert [p.team for p in store.pairs("blue")] == ["blue"] and store.count("red") == 3
    assert store.pairs("green") == [] and got[0].answer_of("strong") == got[0].shadow
    store.close()
    reopened = SqlitePairStore.in_data_dir(tmp_path)
    assert reopened.count("red") == 3
    reopened.close()
