"""Hot reload of the policy file under `hybridgw serve --config`: an edit takes effect within a few
seconds, a broken file (bad YAML, unknown field) is refused with its error logged while the old
policy keeps serving, and SIGHUP reloads too."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.routing.conftest import MESSAGES, Fake, Gateway, serving, wait_until
from tests.support.policy_text import engine_and_hosted

RULES = {
    "to-local-a": "route: [local, hosted]",
    "to-local-b": "route: [local, hosted]",  # same length as -a: an edit the file watcher cannot see
    "to-hosted": "route: [hosted, local]",
}


def _policy(fake: str, rule: str, route: str | None = None) -> str:
    return "version: 1\n" + engine_and_hosted(fake) + f"""\
teams: {{red: {{}}}}
rules:
  - name: {rule}
    {route or RULES[rule]}
"""


@pytest.fixture(scope="module")
def gw(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with serving(tmp_path_factory.mktemp("reload"), _policy(fake.url, "to-local-a")) as gateway:
        yield gateway


def _route(gw: Gateway) -> tuple[str | None, str | None]:
    r = gw.chat("chat")
    assert r.status == 200, r  # the gateway serves throughout, whatever the file holds
    return r.rule, r.backend


def _reloads(gw: Gateway) -> int:
    return gw.log().count("policy reloaded from")


def _becomes(gw: Gateway, rule: str, backend: str) -> None:
    wait_until(lambda: _route(gw) == (rule, backend), f"rule {rule} → {backend} in force", 30, every_s=0.2)


def test_an_edit_changes_the_route_within_seconds(gw: Gateway, fake: Fake) -> None:
    assert gw.config is not None
    assert _route(gw) == ("to-local-a", "local")
    gw.config.write_text(_policy(fake.url, "to-hosted"))
    _becomes(gw, "to-hosted", "hosted")


def _refused(gw: Gateway, fake: Fake, text: str, error: str) -> None:
    assert gw.config is not None
    before = gw.log().count("policy reload refused")
    gw.config.write_text(text)
    wait_until(lambda: gw.log().count("policy reload refused") > before, "the broken file was read", 30)
    assert error in gw.log()
    assert _route(gw) == ("to-hosted", "hosted")  # the old policy stays in force


def test_a_broken_file_is_refused_and_the_old_policy_keeps_serving(gw: Gateway, fake: Fake) -> None:
    assert gw.config is not None
    _becomes(gw, "to-hosted", "hosted")
    _refused(gw, fake, _policy(fake.url, "to-local-a").replace("rules:\n", "rules: [\n"), "not valid YAML")
    # valid YAML, a misspelt field: refused with file:line, the field and a suggestion
    misspelt = _policy(fake.url, "to-local-a", "rout: [local]")
    line = misspelt.splitlines().index("    rout: [local]") + 1
    _refused(gw, fake, misspelt, f"{gw.config}:{line}: rules[0].rout: unknown field; did you mean 'route'?")
    gw.config.write_text(_policy(fake.url, "to-local-a"))  # fixed: it is picked up again
    _becomes(gw, "to-local-a", "local")


def test_a_request_in_flight_finishes_under_the_policy_it_started_with(gw: Gateway, fake: Fake) -> None:
    assert gw.config is not None
    gw.config.write_text(_policy(fake.url, "to-hosted"))
    _becomes(gw, "to-hosted", "hosted")
    with gw.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True, user="fake:chunks=50;delay_ms=100")  # ~5 s
        chunks = iter(raw.parse())
        text = next(chunks).choices[0].delta.content or ""
        gw.config.write_text(_policy(fake.url, "to-local-a"))  # reload while the stream is open
        _becomes(gw, "to-local-a", "local")
        request_id = raw.headers["x-request-id"]
        assert not [r for r in gw.records() if r["request_id"] == request_id]  # still in flight
        text += "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(f"tok{i} " for i in range(50))
    record = gw.record_for(request_id)
    assert (record["rule"], record["backend"], record["status"]) == ("to-hosted", "hosted", "ok")


def test_sighup_reloads(gw: Gateway, fake: Fake) -> None:
    assert gw.config is not None
    gw.config.write_text(_policy(fake.url, "to-local-a"))
    _becomes(gw, "to-local-a", "local")
    before = _reloads(gw)
    os.kill(gw.proc.pid, signal.SIGHUP)  # same file: still a reload
    wait_until(lambda: _reloads(gw) > before, "a reload on SIGHUP", 30)
    # Rewrite in place with the same size and mtime: the watcher sees no change, only SIGHUP does.
    stat = os.stat(gw.config)
    with open(gw.config, "r+") as f:
        f.write(_policy(fake.url, "to-local-b"))
    os.utime(gw.config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _route(gw) == ("to-local-a", "local")
    before = _reloads(gw)
    os.kill(gw.proc.pid, signal.SIGHUP)
    _becomes(gw, "to-local-b", "local")
    # The log line is written after the swap (through the log thread): wait for it, then count it.
    wait_until(lambda: _reloads(gw) > before, "the SIGHUP reload logged", 30)
    assert _reloads(gw) == before + 1
    assert gw.proc.alive()


def test_a_backend_new_in_the_file_is_passed_over_until_a_restart(gw: Gateway, fake: Fake) -> None:
    """Backends are opened (and engines spawned) at start; a new one is logged and skipped, not a 500."""
    assert gw.config is not None
    text = _policy(fake.url, "to-new", "route: [hosted2, local]").replace(
        "  hosted:", f"  hosted2: {{kind: openai, base_url: \"{fake.url}/v1\"}}\n  hosted:").replace(
        "      - {backend: hosted, model: m}", "      - {backend: hosted, model: m}\n      - {backend: hosted2, model: m}")
    gw.config.write_text(text)
    wait_until(lambda: "restart needed: backend hosted2: new" in gw.log(), "the warning", 30)
    _becomes(gw, "to-new", "local")


def test_changed_engine_arguments_say_restart_needed_and_the_engine_keeps_serving(gw: Gateway, fake: Fake) -> None:
    """The spawned engine keeps its arguments until a restart; the reload says so (log and /readyz)."""
    assert gw.config is not None
    pids = gw.engine_pids()
    text = _policy(fake.url, "to-local-a").replace(
        "local: {kind: engine, model: tiny-random}", 'local: {kind: engine, model: tiny-random, engine_args: ["--max-num-seqs", "2"]}')
    gw.config.write_text(text)
    line = "restart needed: engine local: engine_args changed: [] → ['--max-num-seqs', '2']"
    wait_until(lambda: line in gw.log(), "the restart-needed warning", 30)
    ready = httpx.get(f"{gw.url}/readyz", timeout=10).json()
    assert "local" in ready["policy"]["restart_needed"]
    _becomes(gw, "to-local-a", "local")  # the rest of the reload applied; the old engine still serves
    assert gw.engine_pids() == pids
    gw.config.write_text(_policy(fake.url, "to-local-a"))  # back as it runs: nothing waits for a restart
    wait_until(lambda: "local" not in httpx.get(f"{gw.url}/readyz", timeout=10).json()["policy"]["restart_needed"],
               "restart_needed cleared", 30)
