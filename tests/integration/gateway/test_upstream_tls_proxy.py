"""An https upstream reached through HTTPS_PROXY whose TLS handshake fails inside the tunnel (no TLS server there, a
certificate no CA the gateway trusts signed, nothing there: the proxy cuts the tunnel), with real processes: a 502
upstream_error naming the upstream's TLS (then, the circuit open, a 503), and the gateway keeps no socket."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import keys, procs, tunnel_procs
from tests.support.proc_stats import fd_kinds
from tests.support.raw_upstream import make_certs

FAILURES_TO_OPEN = 3  # health.failure_threshold below
LOWER_CASE_PROXY_VARIABLES = ("https_proxy", "http_proxy", "no_proxy")  # a shell's would win over the test's


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[procs.Proc, int]]]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    started = {kind: tunnel_procs.start(kind, certs if kind == "untrusted-tls" else None)
               for kind in ("proxy", "garbage-tls", "untrusted-tls")}
    yield started
    for proc, _ in started.values():
        procs.stop(proc)


def _policy(garbage: int, untrusted: int, dead: int) -> str:
    return f"""
version: 1
health: {{failure_threshold: {FAILURES_TO_OPEN}, cooldown_s: 3600, max_cooldown_s: 3600}}
backends:
  not_tls: {{kind: openai, base_url: "https://127.0.0.1:{garbage}/v1", api_key: k}}
  untrusted: {{kind: openai, base_url: "https://localhost:{untrusted}/v1", api_key: k}}
  down: {{kind: openai, base_url: "https://127.0.0.1:{dead}/v1", api_key: k}}  # the proxy answers 200, then closes
models:
  not_tls: {{deployments: [{{backend: not_tls, model: m}}]}}
  untrusted: {{deployments: [{{backend: untrusted, model: m}}]}}
  down: {{deployments: [{{backend: down, model: m}}]}}
teams:
  t: {{}}
"""


@pytest.mark.parametrize("model,server,host,says", [
    ("not_tls", "garbage-tls", "127.0.0.1", "WRONG_VERSION_NUMBER"),
    ("untrusted", "untrusted-tls", "localhost", "CERTIFICATE_VERIFY_FAILED"),
    ("down", None, "127.0.0.1", "the proxy closed the tunnel"),
])
def test_tls_failing_inside_the_proxy_tunnel_is_a_502_and_leaves_no_socket(
        servers: dict[str, tuple[procs.Proc, int]], tmp_path: Path, model: str, server: str | None, host: str,
        says: str) -> None:
    pport, dead = servers["proxy"][1], procs.free_port()
    upstream, port = servers[server] if server else (None, dead)
    accepted = upstream.output().count("accepted") if upstream else 0  # tunnel_procs.start's own probe
    config = tmp_path / "policy.yaml"
    config.write_text(_policy(servers["garbage-tls"][1], servers["untrusted-tls"][1], dead))
    key = keys.create_key(tmp_path / "data", "t", config)
    env = {"HTTPS_PROXY": f"http://127.0.0.1:{pport}", "NO_PROXY": ""}
    with procs.served(config, env, data_dir=tmp_path / "data", unset=LOWER_CASE_PROXY_VARIABLES) as gw:
        with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
            answers = [client.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
                for _ in range(FAILURES_TO_OPEN + 2)]
        for r in answers[:FAILURES_TO_OPEN]:
            error = r.json()["error"]
            assert (r.status_code, error["type"], error["code"]) == (502, "upstream_error", "upstream_connect"), r.text
            assert f"TLS with {host}:{port} through the proxy 127.0.0.1:{pport} failed" in error["message"], error
            assert says in error["message"], error
        for r in answers[FAILURES_TO_OPEN:]:  # the circuit is open now: no call is made
            assert (r.status_code, r.json()["error"]["type"]) == (503, "service_unavailable"), r.text
        # one fresh connection (and tunnel) per call: none kept by the pool, every one closed
        assert upstream is None or upstream.output().count("accepted") - accepted == FAILURES_TO_OPEN
        sockets = procs.wait_until(lambda: (k := fd_kinds(gw.proc.pid, {"proxy": {pport}}))
                                   and k["proxy"] == 0 and k["closed-tcp"] == 0 and k,
                                   "the gateway to close its connections to the proxy", wait_s=30)
        assert sockets["proxy"] == 0 and sockets["closed-tcp"] == 0
