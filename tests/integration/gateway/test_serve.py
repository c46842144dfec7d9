"""`hybridgw serve` itself: the first-start key, and the local engine spawned by the supervisor and stopped
with it."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import hybridgw
from tests.support import procs

KEY_RE = re.compile(r"sk-hgw-[0-9a-f]{8}-[A-Za-z0-9_-]+")


def serve(config: Path, data_dir: Path, port: int, timeout_s: float = 60.0) -> procs.Proc:
    proc = procs.start(hybridgw("serve", "--config", str(config), "--port", str(port)),
                       env={"HYBRIDGW_DATA_DIR": str(data_dir)}, name="serve")
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout_s)
    except Exception:
        procs.stop(proc)
        raise
    return proc


def test_first_start_prints_one_key_that_works(fake_upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(f"backends:\n  up: {{kind: openai, base_url: '{fake_upstream}/v1'}}\n"
                      f"models:\n  m: {{deployments: [{{backend: up, model: m}}]}}\nteams: {{default: {{}}}}\n")
    port = procs.free_port()
    proc = serve(config, tmp_path / "data", port)
    try:
        keys = KEY_RE.findall(proc.output())
        assert len(set(keys)) == 1
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=keys[0], max_retries=0) as client:
            assert [m.id for m in client.models.list()] == ["m"]
            assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}]).choices
    finally:
        procs.stop(proc)
    assert keys[0].encode() not in (tmp_path / "data" / "keys.sqlite3").read_bytes()
    again = serve(config, tmp_path / "data", port)
    try:
        assert not KEY_RE.findall(again.output())  # keys exist now: no new one
    finally:
        procs.stop(again)


def _engine_available() -> bool:
    return (Path(__file__).resolve().parents[3] / "local_engine" / "cli.py").exists()


def _engine_pids(proc: procs.Proc) -> list[int]:
    return [int(p) for p in re.findall(r"engine local: started pid (\d+)", proc.output())]


def _wait(condition: Callable[[], bool], what: str, wait_s: float = 120.0) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _chat(port: int, key: str, stream: bool = False) -> openai.types.chat.ChatCompletion:
    with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert raw.headers["x-hybridgw-backend"] == "local"
        chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=4, stream=True))
        assert chunks and all(c.usage is None for c in chunks)
        return raw.parse()


@pytest.mark.skipif(not _engine_available(), reason="local_engine/cli.py (helper 'engine') has not landed")
def test_gateway_spawns_and_stops_the_local_engine(tmp_path: Path) -> None:
    # A killed engine restarted by the supervisor and traffic back on it:
    # tests/integration/routing/test_engine_restart.py
    config = tmp_path / "policy.yaml"
    config.write_text("backends:\n  local: {kind: engine, model: tiny-random}\n"
                      "models:\n  tiny: {deployments: [{backend: local, model: tiny-random}]}\n"
                      "teams:\n  default: {}\n")
    port = procs.free_port()
    proc = serve(config, tmp_path / "data", port, timeout_s=300)
    try:
        key = KEY_RE.findall(proc.output())[0]
        reply = _chat(port, key)
        assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 4
        [engine] = _engine_pids(proc)
        _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, "not ready")
        assert not procs.gone(engine)
        body = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        tasks = body["tasks"]
        assert tasks["heap_trim"]["state"] == "running", tasks  # gateway/heap_trim.py, in the serving process
        assert body["heap_trim"]["trims"] >= 0 and body["heap_trim"]["released_bytes"] >= 0, body  # its figures
    finally:
        procs.stop(proc)
    _wait(lambda: procs.gone(engine), "engine outlived the gateway", 30)
