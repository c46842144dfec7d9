"""The local engine process is killed under `hybridgw serve`: the stream it was serving ends with an
error (no hang), the gateway keeps answering — spill to hosted, or 503 + Retry-After for a
local-only model — the supervisor restarts the engine, and traffic goes back to it."""
from __future__ import annotations

import os
import signal

import openai
import pytest

from tests.integration.routing.conftest import MESSAGES, Gateway, Routed, wait_until
from tests.support import procs


def _kill_mid_stream(gw: Gateway, pid: int) -> None:
    with gw.client() as client:
        stream = client.chat.completions.create(model="private", messages=MESSAGES, max_tokens=3000, stream=True,
                                                extra_body={"ignore_eos": True})
        chunks = iter(stream)
        assert next(chunks).model == "tiny-random"  # the engine is decoding this request
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(openai.APIError):  # an error event ends the stream; the client timeout bounds it
            for _ in chunks:
                pass


def _refusal_is_clean(r: Routed, seen_503: bool) -> bool:
    """503 + Retry-After once the gateway knows the engine is down; before that (the first
    poll after the kill) a connection refused on the only target is a 502."""
    if r.status == 503:
        return int(r.retry_after or 0) >= 1 and r.body["code"] == "no_healthy_backend"
    return not seen_503 and r.status == 502 and r.body["code"] == "upstream_connect"


def test_engine_killed_gateway_keeps_answering_and_traffic_recovers(roomy: Gateway) -> None:
    gw = roomy
    assert gw.chat("chat").backend == "local" and gw.chat("private").backend == "local"
    [pid] = gw.engine_pids()
    _kill_mid_stream(gw, pid)
    chat: list[Routed] = []
    private: list[Routed] = []

    def recovered() -> bool:
        chat.append(gw.chat("chat"))
        private.append(gw.chat("private"))
        return private[-1].status == 200 and chat[-1].backend == "local"

    wait_until(recovered, "traffic back on the restarted engine", 120, every_s=0.05)
    assert procs.gone(pid) and len(gw.engine_pids()) == 2  # the supervisor started a new engine process
    assert all(r.status == 200 for r in chat), [r for r in chat if r.status != 200]
    assert "hosted" in {r.backend for r in chat}  # spilled while the engine was down
    assert all(r.backend == "local" for r in private if r.status == 200)
    refused = [r for r in private if r.status != 200]
    assert any(r.status == 503 for r in refused), refused
    seen_503 = False
    for r in refused:
        assert _refusal_is_clean(r, seen_503), r
        seen_503 = seen_503 or r.status == 503
    assert gw.chat("private", max_tokens=5, extra_body={"ignore_eos": True}).body.usage.completion_tokens == 5
