"""True numbers from the relay, through a real gateway and the fake upstream: TTFT at the first
content (not OpenAI's role-only opener), failures after the first byte recorded as failures (and
told to the circuit breaker), upstream usage numbers checked, non-streamed bodies bounded by
total_s and never paid twice."""
from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, Gateway, create_key
from tests.support import procs
from tests.support.procs import wait_until

MESSAGES = [{"role": "user", "content": "what is the capital of France"}]
ROLE_DELAY_S = 1.5


def policy(fake: str) -> str:
    return f"""
version: 1
# One failure opens a backend's circuit for long: each breaker test has backends of its own.
health: {{failure_threshold: 1, cooldown_s: 600, max_cooldown_s: 600}}
backends:
  fake: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake]}}
  inband: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake]}}
  inband2: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake]}}
  errbody: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake]}}
  spare: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake]}}
  patient: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake], timeouts: {{first_byte_s: 1, total_s: 60}}}}
  brief: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake], timeouts: {{first_byte_s: 1, total_s: 2}}}}
  mute: {{kind: openai, base_url: "{fake}/v1", extra_body_fields: [fake], timeouts: {{first_byte_s: 1, total_s: 2}}}}
models:
  roledelay: {{deployments: [{{backend: fake, model: "m;role_delay_ms={int(ROLE_DELAY_S * 1000)};chunks=5"}}]}}
  inband: {{deployments: [{{backend: inband, model: "m;chunks=4;error_after=2"}}]}}
  inband2: {{deployments: [{{backend: inband2, model: "m;chunks=4;error_after=2"}}]}}
  viainband: {{deployments: [{{backend: inband, model: m}}, {{backend: spare, model: m}}]}}
  errbody: {{deployments: [{{backend: errbody, model: "m;error_body=1"}}]}}
  viaerrbody: {{deployments: [{{backend: errbody, model: m}}, {{backend: spare, model: m}}]}}
  hugeusage: {{deployments: [{{backend: fake, model: "m;usage_prompt=1e300"}}]}}
  negusage: {{deployments: [{{backend: fake, model: "m;usage_prompt=-5"}}]}}
  bigintusage: {{deployments: [{{backend: fake, model: "m;usage_prompt=1099511627777"}}]}}
  slowbody: {{deployments: [{{backend: patient, model: "m;body_delay_ms=2500"}}, {{backend: spare, model: m}}]}}
  cutbody: {{deployments: [{{backend: brief, model: "m;body_delay_ms=8000"}}, {{backend: spare, model: m}}]}}
  silent: {{deployments: [{{backend: mute, model: "m;ttft_ms=8000"}}, {{backend: spare, model: m}}]}}
teams: {{red: {{}}}}
"""


@pytest.fixture(scope="module")
def relay_gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("relay")
    data_dir, config = root / "data", root / "policy.yaml"
    config.write_text(policy(fake_upstream))
    keys = {"red": create_key(data_dir, "red", config)}
    env = {"HYBRIDGW_DATA_DIR": str(data_dir), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "relay-gateway") as (url, proc):
        yield Gateway(url, fake_upstream, data_dir, keys, proc, env)


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    """The sum of one Prometheus series over the samples whose labels include `labels`."""
    text = httpx.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_ttft_waits_for_the_first_content_not_the_role_chunk(relay_gateway: Gateway) -> None:
    with relay_gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="roledelay", messages=MESSAGES, stream=True)
        chunks = list(raw.parse())
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 tok4 "
    record = relay_gateway.record_for(raw.headers["x-request-id"])
    assert record["status"] == "ok"
    # The role chunk came at once, the first word ROLE_DELAY_S later: that is the TTFT (the old
    # code stamped the role chunk), and the wait is in no inter-token gap.
    assert record["ttft_s"] >= ROLE_DELAY_S and record["upstream_latency_s"] >= ROLE_DELAY_S
    assert record["itl_max_s"] is not None and record["itl_max_s"] < ROLE_DELAY_S

    genai = {"gen_ai_request_model": "roledelay"}
    # Metrics: one TTFT above 1 s (none in the buckets up to 1 s), and one time per output token, as
    # semconv defines it: (duration − TTFT) / (output tokens − 1) — the role chunk's wait is in neither.
    wait_until(lambda: metric(relay_gateway, "gen_ai_server_time_to_first_token_seconds_count", **genai) == 1,
               "the TTFT histogram to hold the request")
    assert metric(relay_gateway, "gen_ai_server_time_to_first_token_seconds_bucket", le="1.0", **genai) == 0
    assert metric(relay_gateway, "gen_ai_server_time_per_output_token_seconds_count", **genai) == 1
    tpot = (record["e2e_s"] - record["ttft_s"]) / (record["completion_tokens"] - 1)
    assert metric(relay_gateway, "gen_ai_server_time_per_output_token_seconds_sum", **genai) == pytest.approx(tpot)


def test_an_in_band_error_is_relayed_recorded_as_error_and_opens_the_circuit(relay_gateway: Gateway) -> None:
    with httpx.Client(timeout=30) as http:
        before = http.post(f"{relay_gateway.url}/v1/chat/completions", headers=relay_gateway.auth(),
                           json={"model": "viainband", "messages": MESSAGES})
        assert before.headers["x-hybridgw-backend"] == "inband"
        with http.stream("POST", f"{relay_gateway.url}/v1/chat/completions", headers=relay_gateway.auth(),
                         json={"model": "inband", "messages": MESSAGES, "stream": True}) as response:
            text = response.read().decode()
            request_id = response.headers["x-request-id"]
        frames = [f for f in text.split("\n\n") if f]
        # role chunk, two content chunks, then the upstream's error as an OpenAI-shaped frame, [DONE]
        assert '"tok1 "' in frames[2] and frames[-1] == "data: [DONE]"
        assert frames[-2].startswith('data: {"error":') and "fake in-band error" in frames[-2]
        assert '"type":"upstream_error"' in frames[-2]
        record = relay_gateway.record_for(request_id)
        assert (record["status"], record["error_type"]) == ("error", "upstream_error")
        # The breaker heard of it: the backend is skipped without being asked.
        after = http.post(f"{relay_gateway.url}/v1/chat/completions", headers=relay_gateway.auth(),
                          json={"model": "viainband", "messages": MESSAGES})
        assert after.status_code == 200 and after.headers["x-hybridgw-backend"] == "spare"
        assert "skipped" not in relay_gateway.record_for(after.headers["x-request-id"])


def test_the_sdk_sees_the_in_band_error(relay_gateway: Gateway) -> None:
    seen = []
    with relay_gateway.client() as client, pytest.raises(openai.APIError, match="fake in-band error"):
        for chunk in client.chat.completions.create(model="inband2", messages=MESSAGES, stream=True):
            seen.append(chunk)
    assert len(seen) == 3  # the role chunk and two content chunks


def test_a_200_whose_body_is_an_error_is_a_failure(relay_gateway: Gateway) -> None:
    with relay_gateway.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="errbody", messages=MESSAGES)
        assert caught.value.status_code == 502 and "fake error in a 200 body" in caught.value.message
        record = relay_gateway.record_for(caught.value.response.headers["x-request-id"])
        assert (record["status"], record["error_type"]) == ("error", "upstream_error")
        raw = client.chat.completions.with_raw_response.create(model="viaerrbody", messages=MESSAGES)
        assert raw.headers["x-hybridgw-backend"] == "spare"  # the circuit of `errbody` is open


@pytest.mark.parametrize("alias", ["hugeusage", "negusage", "bigintusage"])
@pytest.mark.parametrize("stream", [False, True])
def test_absurd_upstream_usage_is_counted_instead(relay_gateway: Gateway, alias: str, stream: bool) -> None:
    with relay_gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(model=alias, messages=MESSAGES, stream=stream)
        if stream:
            list(raw.parse())  # read to the end: the record is written when the stream ends
    record = relay_gateway.record_for(raw.headers["x-request-id"])
    assert record["status"] == "ok" and record["usage_source"] == "counted"
    assert isinstance(record["prompt_tokens"], int) and 0 < record["prompt_tokens"] < 100
    assert record["prompt_tokens"] == record["estimated_prompt_tokens"]
    assert 0 < record["completion_tokens"] < 100
    assert "reported usage that is no sane token count" in relay_gateway.proc.output()


def test_a_slow_body_after_early_headers_is_not_cut_by_the_first_byte_timeout(relay_gateway: Gateway) -> None:
    with relay_gateway.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(model="slowbody", messages=MESSAGES)
    assert raw.headers["x-hybridgw-backend"] == "patient"
    assert raw.parse().choices[0].message.content == "tok0 tok1 tok2 tok3 "
    record = relay_gateway.record_for(raw.headers["x-request-id"])
    assert record["status"] == "ok" and "skipped" not in record


def test_a_body_past_total_s_fails_and_is_not_paid_twice(relay_gateway: Gateway) -> None:
    tag = uuid.uuid4().hex
    with relay_gateway.client(timeout=60) as client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="cutbody", messages=MESSAGES, extra_body={"fake": {"tag": tag}})
    assert caught.value.status_code == 504 and "within 2 s" in caught.value.message
    record = relay_gateway.record_for(caught.value.response.headers["x-request-id"])
    assert (record["status"], record["backend"]) == ("error", "brief") and "skipped" not in record
    wait_until(lambda: tag in relay_gateway.disconnect_tags(), "the cut upstream call to be closed", 15)


def test_nothing_by_the_first_byte_deadline_still_moves_on(relay_gateway: Gateway) -> None:
    with relay_gateway.client(timeout=60) as client:
        raw = client.chat.completions.with_raw_response.create(model="silent", messages=MESSAGES)
    assert raw.headers["x-hybridgw-backend"] == "spare"
    assert [s["backend"] for s in relay_gateway.record_for(raw.headers["x-request-id"])["skipped"]] == ["mute"]
