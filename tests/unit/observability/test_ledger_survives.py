"""The ledger's writer thread against hostile records and a store that refuses writes (a real SQLite
file put in query-only mode): nothing is lost, poison goes to the dead-letter file, the thread lives."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from observability.ledger import Ledger, LedgerConfig
from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from observability.stores import record_problem
from observability.task_status import TaskStatus, backoff_s
from tests.unit.observability.conftest import T0, record

FAST = LedgerConfig(flush_interval_s=0.01, retry_interval_s=0.01, max_backoff_s=0.05, unready_after_s=0.0)


def _ids(store: SqliteStore) -> set[str]:
    return {r.request_id for r in store.records(None, T0 - 1, T0 + 1)}


def _dead(spill_dir: Path) -> list[dict[str, object]]:
    path = spill_dir / "dead-letter.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_record_problem_names_numbers_no_store_can_hold() -> None:
    assert record_problem(record()) is None
    assert "prompt_tokens" in (record_problem(record(prompt_tokens=10**300)) or "")
    assert "completion_tokens" in (record_problem(record(completion_tokens=1e300)) or "")  # type: ignore[arg-type]
    assert record_problem(record(cost_usd=float("inf"))) is not None
    assert record_problem(record(cost_usd=1e12)) is not None  # its nano-dollar counter overflows
    assert record_problem(record(itl_gaps_s=(0.1, float("nan")))) is not None


def test_backoff_doubles_to_a_cap_and_status_reports_the_error() -> None:
    assert [backoff_s(n, 1.0, 5.0) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 5.0]
    status = TaskStatus("t", base_s=1.0, cap_s=5.0)
    assert status.failed(OSError(24, "Too many open files")) == 1.0
    assert status.failed("again") == 2.0
    state = status.snapshot()
    assert (state.state, state.failures, state.last_error) == ("retrying", 2, "again")
    assert "last_error" not in state.public()
    status.ok()
    assert status.snapshot().state == "running" and status.snapshot().detail()["last_error"] == "again"


def test_absurd_usage_numbers_are_dead_lettered_and_every_later_record_is_written(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    ledger = Ledger(store, spill=SpillFile(tmp_path / "spill"), config=FAST).start()
    ledger.submit(record(request_id="huge", prompt_tokens=10**300))  # what killed the thread before
    ledger.submit(record(request_id="inf", cost_usd=float("inf")))
    ledger.submit(record(request_id="fine-1"))
    assert ledger.flush(10)
    ledger.submit(record(request_id="fine-2"))  # the thread is still alive and writing
    assert ledger.flush(10)
    assert _ids(store) == {"fine-1", "fine-2"}
    assert sorted(str(d["record"]["request_id"]) for d in _dead(tmp_path / "spill")) == ["huge", "inf"]  # type: ignore[index]
    health = ledger.health()
    assert health.dead_lettered == 2 and not health.failing and health.writer.state == "running"
    ledger.close()


def test_a_record_the_store_chokes_on_is_retried_then_dead_lettered_alone(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    ledger = Ledger(store, spill=SpillFile(tmp_path / "spill"), config=FAST).start()
    # A lone surrogate cannot be encoded for SQLite: an error no rule foresaw, of this record only.
    ledger.submit(record(request_id="bad", team="te\ud800am"))
    for i in range(3):
        ledger.submit(record(request_id=f"ok-{i}"))
    _wait(lambda: ledger.health().dead_lettered == 1, "the choking record dead-lettered")
    assert ledger.flush(10, include_spill=True)
    assert _ids(store) == {"ok-0", "ok-1", "ok-2"}
    assert "failed 5 times" in str(_dead(tmp_path / "spill")[0]["reason"])
    ledger.submit(record(request_id="after"))
    assert ledger.flush(10) and "after" in _ids(store)
    ledger.close()


def test_a_refusing_store_spills_reports_unready_and_replays_once_it_recovers(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    ledger = Ledger(store, spill=SpillFile(tmp_path / "spill"), config=FAST).start()
    store._conn.execute("PRAGMA query_only = ON")  # every write now fails: "attempt to write a readonly database"
    for i in range(5):
        ledger.submit(record(request_id=f"r{i}"))
    assert ledger.flush(10)  # spilled: durable on disk
    health = ledger.health()
    assert health.failing and health.spill_pending and health.writer.state == "retrying"
    assert "readonly" in str(health.writer.last_error)
    assert _ids(store) == set()
    store._conn.execute("PRAGMA query_only = OFF")
    assert ledger.flush(20, include_spill=True)
    assert _ids(store) == {f"r{i}" for i in range(5)}
    _wait(lambda: ledger.health().writer.state == "running", "writer back to running")
    assert not ledger.health().failing
    ledger.close()


def test_a_corrupt_spill_line_is_dead_lettered_and_the_rest_replayed(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    good = [json.dumps(record(request_id=f"s{i}").to_dict()) for i in range(2)]
    (spill_dir / "spill-1-old.jsonl").write_text(f"{good[0]}\n{{not json\n\"a string\"\n{good[1]}\n")
    store = SqliteStore(tmp_path / "u.sqlite3")
    ledger = Ledger(store, spill=SpillFile(spill_dir), config=FAST).start()
    assert ledger.flush(10, include_spill=True)
    assert _ids(store) == {"s0", "s1"}
    assert [d["line"] for d in _dead(spill_dir)] == ["{not json", '"a string"']
    ledger.close()


def test_close_writes_what_is_queued_even_when_never_started(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    ledger = Ledger(store, spill=SpillFile(tmp_path / "spill"), config=FAST)
    ledger.submit(record(request_id="q1", prompt_tokens=10**300))
    ledger.submit(record(request_id="q2"))
    ledger.close()
    assert _ids(store) == {"q2"} and ledger.stats.dead_lettered == 1


_EMFILE_SCRIPT = """
import json, os, resource, sys, time
from pathlib import Path
from observability.ledger import Ledger, LedgerConfig
from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from tests.unit.observability.conftest import record

root = Path(sys.argv[1])
store = SqliteStore(root / "u.sqlite3")
store._conn.execute("PRAGMA query_only = ON")  # the store refuses: records must go to the spill file
ledger = Ledger(store, spill=SpillFile(root / "spill"),
                config=LedgerConfig(flush_interval_s=0.01, retry_interval_s=0.01, max_backoff_s=0.05)).start()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()  # glibc loads libgcc_s now
in_use = [int(fd) for fd in os.listdir("/proc/self/fd")]  # includes listdir's own, closed now
resource.setrlimit(resource.RLIMIT_NOFILE, (max(in_use), hard))  # no fd left above the open ones
try:
    open(root / "probe", "w")
    sys.exit("the fd limit did not bite")
except OSError:
    pass
for i in range(3):
    ledger.submit(record(request_id=f"e{i}"))
held = not ledger.flush(1.0)
health = ledger.health()
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
store._conn.execute("PRAGMA query_only = OFF")
flushed = ledger.flush(20, include_spill=True)
ids = sorted(r.request_id for r in store.records(None, 0, 4e9))
print(json.dumps({"held": held, "failing": health.failing, "error": health.writer.last_error,
                  "alive": ledger._thread.is_alive(), "flushed": flushed, "ids": ids}))
"""


def test_too_many_open_files_holds_records_in_memory_until_it_clears(tmp_path: Path) -> None:
    """A real EMFILE (RLIMIT_NOFILE lowered in a child process): the writer lives, reports, loses nothing."""
    repo = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", _EMFILE_SCRIPT, str(tmp_path)], cwd=repo, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["held"] and result["failing"] and "Too many open files" in str(result["error"])
    assert result["alive"] and result["flushed"] and result["ids"] == ["e0", "e1", "e2"]
