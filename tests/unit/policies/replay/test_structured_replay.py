"""A recorded request that asked for constrained output (the usage record's `structured_output`) is replayed as
the gateway routed it: our engine passed over (policies/structured_output.py), the hosted spill serves it. A
ledger from before the field, and a JSONL line without it, replay as before."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from observability.sqlite_store import SqliteStore
from observability.stores import encode_record
from observability.usage import UsageRecord
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import TrafficError, read_jsonl, read_ledger
from tests.unit.policies.replay.support import KV_FIT, PERF

T0 = 1_800_000_000.0


def _record(i: int, asked: str = "") -> UsageRecord:
    return UsageRecord(
        request_id=f"r{i}", time=T0 + 10 * i, team="a", key_id="k", model_alias="chat", backend="openai",
        model="gpt-4o-mini", rule="fit", status="ok", http_status=200, stream=False, prompt_tokens=100,
        completion_tokens=10, estimated_prompt_tokens=100, estimated_completion_tokens=10, usage_source="upstream",
        cost_usd=0.0, ttft_s=0.1, itl_p50_s=None, itl_p95_s=None, itl_max_s=None, e2e_s=0.2, structured_output=asked)


def test_a_recorded_json_request_replays_to_the_hosted_backend_and_an_old_record_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    store = SqliteStore(path)
    store.write_batch([_record(0), _record(1, "response_format"), _record(2, "guided_json")])
    store.close()
    old = json.loads(encode_record(_record(3)))
    del old["structured_output"]  # written before the field was
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO usage_records (request_id, time, team, body) VALUES (?, ?, ?, ?)",
                     ("r3", old["time"], "a", json.dumps(old)))
    conn.close()
    traffic = read_ledger(path, T0 - 1, T0 + 100)
    assert [r.structured_output for r in traffic] == ["", "response_format", "guided_json", ""]
    outcomes = replay(KV_FIT, traffic, ReplaySetup(PERF, {}, 0))
    assert outcomes.backend == ["local", "openai", "openai", "local"]  # an idle engine fits the rest


def test_a_jsonl_line_may_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = {"time": 1, "team": "a", "model": "chat", "prompt_tokens": 100, "output_tokens": 10}
    path.write_text(json.dumps(line) + "\n" + json.dumps({**line, "time": 2, "structured_output": "guided_json"}))
    traffic = read_jsonl(path)
    assert [r.structured_output for r in traffic] == ["", "guided_json"]
    assert replay(KV_FIT, traffic, ReplaySetup(PERF, {}, 0)).backend == ["local", "openai"]
    path.write_text(json.dumps({**line, "structured_output": True}) + "\n")
    with pytest.raises(TrafficError, match="structured_output must be a string"):
        read_jsonl(path)
