"""OTEL_TRACES_SAMPLER / _ARG on a real gateway process: with `parentbased_traceidratio` at 0 the
gateway exports no span for a request it starts the trace of (and tells the upstream so: sampled flag off),
while a caller's sampled traceparent still gets the whole trace (request, route and upstream spans,
exported over OTLP to a real receiver) and the upstream sees it sampled."""
from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from tests.integration.gateway.conftest import create_key
from tests.support import procs
from tests.support.otlp_sink import TraceSink


def test_head_sampler_from_otel_env(fake_upstream: str, tmp_path: Path) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(f"backends:\n  fake: {{kind: openai, base_url: '{fake_upstream}/v1'}}\n"
                      "models:\n  m: {deployments: [{backend: fake, model: m}]}\nteams:\n  red: {}\n")
    key = create_key(tmp_path / "data", "red", config)
    sink = TraceSink().start()
    env = {"HYBRIDGW_DATA_DIR": str(tmp_path / "data"), "REDIS_URL": "", "HYBRIDGW_WORKERS": "1",
           "HYBRIDGW_TRACES": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    try:
        with procs.gateway(config, env) as (url, _proc):
            def chat(request_id: str, headers: dict[str, str]) -> str:
                response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
                    "model": "m", "messages": [{"role": "user", "content": "hi"}]}, headers={
                    "authorization": f"Bearer {key}", "x-request-id": request_id, **headers})
                assert response.status_code == 200, response.text
                return httpx.get(f"{fake_upstream}/_last_request").json()["headers"]["traceparent"]

            unsampled = chat("req-unsampled-" + secrets.token_hex(4), {})
            trace_id = secrets.token_hex(16)
            sampled = chat("req-sampled-" + secrets.token_hex(4), {"traceparent": f"00-{trace_id}-{'5' * 16}-01"})
            # Spans leave in the order they ended: once the second request's are in, the first's would be.
            spans = procs.wait_until(lambda: len(s := sink.snapshot()) >= 3 and s, "the sampled request's spans")
    finally:
        sink.stop()
    sampled_bit = [int(parent.split("-")[3], 16) & 1 for parent in (unsampled, sampled)]
    assert sampled_bit == [0, 1]  # (the SDK also sets 0x02, "random trace id", on ids it made)
    assert unsampled.split("-")[1] != trace_id and sampled.split("-")[1] == trace_id
    assert sorted(s["name"] for s in spans) == ["chat m", "route", "upstream fake"]
    assert {s["trace_id"] for s in spans} == {trace_id}
