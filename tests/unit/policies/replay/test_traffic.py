"""Reading recorded traffic: JSONL lines and the usage ledger's SQLite file, with clear errors."""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from observability.sqlite_store import SqliteStore
from observability.usage import UsageRecord
from policies.replay.traffic import Recorded, TrafficError, read_jsonl, read_ledger
from policies.shadow_spec import SHADOW_RULE


def _usage(i: int, when: float, status: str = "ok", team: str = "a") -> UsageRecord:
    return UsageRecord(request_id=f"r{i}", time=when, team=team, key_id="k", model_alias="chat", backend="local",
                       model="smollm2", rule="fit", status=status, http_status=200, stream=True, prompt_tokens=100 + i,
                       completion_tokens=20, estimated_prompt_tokens=100, estimated_completion_tokens=256,
                       usage_source="upstream", cost_usd=0.0, ttft_s=0.1, itl_p50_s=0.01, itl_p95_s=0.02,
                       itl_max_s=0.03, e2e_s=1.0)


def test_jsonl_sorted_by_time_with_optional_fields(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"time": 5, "team": "a", "model": "chat", "prompt_tokens": 10, "output_tokens": 3,
                                "prefix_id": "sys", "prefix_tokens": 64, "key_id": "k1"}) + "\n\n"
                    + json.dumps({"time": 1, "team": "b", "model_alias": "chat", "prompt_tokens": 7,
                                  "completion_tokens": 2, "max_tokens": 50}) + "\n")
    records = read_jsonl(path)
    assert [r.team for r in records] == ["b", "a"]
    assert records[0].max_tokens == 50 and records[1].prefix_tokens == 10  # capped at the prompt
    assert (records[0].key_id, records[1].key_id) == ("", "k1")  # the key's own limits apply in replay


@pytest.mark.parametrize(("line", "message"), [
    ('{"time": 1, "team": "a", "model": "m", "prompt_tokens": 0, "output_tokens": 1}', "prompt_tokens must be"),
    ('{"time": "x", "team": "a", "model": "m", "prompt_tokens": 1, "output_tokens": 1}', "time must be a number"),
    ('{"time": 1, "team": "a", "model": "m", "prompt_tokens": 1, "output_tokens": 1, "isl": 3}', "unknown field 'isl'"),
    ("not json", "not JSON"),
    ('{"time": 1, "team": "a", "model": "m", "prompt_tokens": 1, "output_tokens": 1, "key_id": 7}', "key_id must be"),
])
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TrafficError, match=message) as info:
        read_jsonl(path)
    assert f"{path}:1" in str(info.value)


_GOOD = '{"time": 1, "team": "a", "model": "m", "prompt_tokens": 1, "output_tokens": 1}'


@pytest.mark.parametrize("bad", [
    ['{"time": 2, "team": "a"'],  # cut short: the whole-file parse fails
    [_GOOD + ", " + _GOOD],  # two objects on one line: the whole file parses, one value too many
    ["[" + _GOOD, "2]"],  # one JSON value across two lines: the whole file parses, one value too few
])
def test_a_bad_line_among_good_ones_is_named(tmp_path: Path, bad: list[str]) -> None:
    """The file is parsed in one go; a line that is not one JSON value is still found and named."""
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([_GOOD, "", *bad, _GOOD]) + "\n")
    with pytest.raises(TrafficError, match="not JSON") as info:
        read_jsonl(path)
    assert f"{path}:3" in str(info.value)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TrafficError, match="no requests to replay"):
        read_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(TrafficError, match="cannot read"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_ledger_window_read_only(tmp_path: Path) -> None:
    db = tmp_path / "usage.sqlite3"
    t0 = time.time() - 3600  # within the store's retention
    store = SqliteStore(db)
    unrouted = replace(_usage(5, t0 + 400, status="rejected"), estimated_prompt_tokens=0, estimated_completion_tokens=0)
    store.write_batch([_usage(0, t0 + 100), _usage(1, t0 + 200), _usage(2, t0 + 300, status="rejected"),
                       _usage(3, t0 + 250, team="b"), _usage(4, t0 + 900), unrouted])
    store.close()
    records = read_ledger(db, t0 + 150, t0 + 800)
    # The refused one (a 429 after routing) is replayed with the gateway's estimate (100 in, 256 out);
    # one refused before routing (no estimate: auth, bad body) is not: no policy decided it.
    assert [(r.time - t0, r.team, r.prompt_tokens) for r in records] == [(200.0, "a", 101), (250.0, "b", 103),
                                                                         (300.0, "a", 100)]
    assert records[2].output_tokens == 256 and records[2].recorded == Recorded("", "rejected", 0.0, 0.1, 1.0)
    assert records[0].max_tokens == 256 and records[0].output_tokens == 20 and records[0].key_id == "k"
    assert records[0].recorded == Recorded("local", "ok", 0.0, 0.1, 1.0)  # the baseline replay compares with
    assert [r.team for r in read_ledger(db, t0, t0 + 1000, ["b"])] == ["b"]
    with pytest.raises(TrafficError, match="no requests to replay"):
        read_ledger(db, t0 + 1000, t0 + 2000)


def test_shadow_calls_in_the_ledger_are_not_arrivals(tmp_path: Path) -> None:
    # a shadow call (rule "shadow", the team's spend) answers a request already recorded: replaying it
    # as traffic would count each sampled request twice
    db = tmp_path / "usage.sqlite3"
    t0 = time.time() - 3600
    store = SqliteStore(db)
    shadow = replace(_usage(0, t0 + 101), request_id="r0.shadow", rule=SHADOW_RULE, backend="openai")
    store.write_batch([_usage(0, t0 + 100), shadow, _usage(1, t0 + 200)])
    store.close()
    assert [r.time - t0 for r in read_ledger(db, t0, t0 + 1000)] == [100.0, 200.0]


def test_unreadable_ledgers(tmp_path: Path) -> None:
    with pytest.raises(TrafficError, match="no usage ledger there"):
        read_ledger(tmp_path / "absent.db", 0.0, 1.0)
    assert not (tmp_path / "absent.db").exists()  # never created
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(TrafficError, match="cannot read the usage ledger"):
        read_ledger(garbage, 0.0, 1.0)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    with pytest.raises(TrafficError, match="cannot read the usage ledger"):
        read_ledger(other, 0.0, 1.0)
