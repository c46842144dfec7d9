"""Hosted failures end to end: a 5xx before the first byte falls back to the local engine, and a
backend that keeps failing is put in cooldown (skipped without being asked) until a half-open
probe finds it healthy again."""
from __future__ import annotations

import pytest

from tests.integration.routing.conftest import MESSAGES, Fake, Gateway, wait_until

FAIL = {"user": "fake:status=503;message=shaky is down"}  # the fake fails only requests marked so


def test_hosted_503_falls_back_to_the_engine_which_answers(hybrid: Gateway, fake: Fake) -> None:
    before = fake.requests()
    r = hybrid.chat("fallback", max_tokens=5, extra_body={"ignore_eos": True})
    assert (r.status, r.backend, r.rule) == (200, "local", "hosted-first")
    assert r.model == "tiny-random" and r.body.usage.completion_tokens == 5  # the engine's own answer
    assert fake.requests() == before + 1  # hosted was asked first
    assert hybrid.record_for(r.request_id)["skipped"] == [
        {"backend": "flaky", "error": "upstream flaky returned 503: hosted is overloaded"}]
    with hybrid.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="fallback", messages=MESSAGES, max_tokens=5, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True})
        assert raw.headers["x-hybridgw-backend"] == "local"
        chunks = list(raw.parse())
    assert chunks[0].model == "tiny-random" and chunks[-1].usage.completion_tokens == 5


@pytest.mark.parametrize(("alias", "backend", "error"), [
    ("limited", "limited", "upstream limited returned 429: rate limited upstream"),
    ("slowfirst", "slowpoke", "upstream slowpoke timed out"),  # no first byte within first_byte_s
])
@pytest.mark.parametrize("stream", [False, True])
def test_429_and_no_first_byte_in_time_fall_back_too(hybrid: Gateway, alias: str, backend: str, error: str,
                                                    stream: bool) -> None:
    with hybrid.client() as client:
        raw = client.chat.completions.with_raw_response.create(model=alias, messages=MESSAGES, max_tokens=3,
                                                               stream=stream)
        assert raw.headers["x-hybridgw-backend"] == "local"
        reply = raw.parse()
        model = next(iter(reply)).model if stream else reply.model
    assert model == "tiny-random"
    assert hybrid.record_for(raw.headers["x-request-id"])["skipped"] == [{"backend": backend, "error": error}]


def _asked(fake: Fake, hybrid: Gateway, **kw: object) -> tuple[str | None, bool]:
    """(backend that answered, whether the fake was asked) for one request to alias `shaky`."""
    before = fake.requests()
    r = hybrid.chat("shaky", **kw)
    assert r.status == 200, r
    return r.backend, fake.requests() > before


def test_failing_backend_cools_down_then_a_half_open_probe_brings_it_back(hybrid: Gateway, fake: Fake) -> None:
    assert _asked(fake, hybrid) == ("shaky", True)
    for _ in range(3):  # failure_threshold: 3 failures in a row open the circuit
        assert _asked(fake, hybrid, **FAIL) == ("local", True)
    # Open (for cooldown_s = 8 s): skipped without being asked, even by a request it would have served.
    r = hybrid.chat("shaky")
    assert r.backend == "local" and "skipped" not in hybrid.record_for(r.request_id)
    assert _asked(fake, hybrid) == ("local", False)
    # Cooldown over: one probe is let through; it fails, so the circuit opens again at once (8 s more).
    wait_until(lambda: _asked(fake, hybrid, **FAIL)[1], "a half-open probe", 60, every_s=0.2)
    assert _asked(fake, hybrid) == ("local", False)
    # The next probe succeeds: the circuit closes and the backend serves again.
    wait_until(lambda: _asked(fake, hybrid)[0] == "shaky", "a good probe closes the circuit", 60, every_s=0.2)
    assert _asked(fake, hybrid) == ("shaky", True)
