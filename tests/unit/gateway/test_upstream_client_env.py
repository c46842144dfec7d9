"""The upstream client keeps what httpx gave: HTTP(S)_PROXY and NO_PROXY honoured (read once per
backend, with the proxy URL's credentials), and certifi's CAs for https backends."""
from __future__ import annotations

import ssl

import pytest

from gateway.backends.upstream_pool import Target, env_proxy, request_head, target, tls_context


def test_no_proxy_in_the_environment_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://api.openai.com/v1") is None


def test_the_proxy_for_the_scheme_unless_no_proxy_covers_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    proxy = env_proxy("https://api.openai.com/v1")
    assert proxy is not None and proxy.url == "http://proxy.example:3128"
    assert (proxy.host, proxy.port, proxy.tls, proxy.authorization) == ("proxy.example", 3128, None, b"")
    assert env_proxy("http://127.0.0.1:8000/v1") is None


def test_a_proxy_urls_credentials_become_its_basic_authorization(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://us%40r:p%3Ass@proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    proxy = env_proxy("http://engine.internal:8000/v1")
    assert proxy is not None and proxy.authorization == b"proxy-authorization: Basic dXNAcjpwOnNz\r\n"  # us@r:p:ss


def test_plain_http_through_a_proxy_sends_absolute_form_with_the_proxys_credentials(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://u:p@proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    head = request_head(target("http://engine.internal:8000/v1"), "/v1/completions", {"accept": "*/*"})
    assert head == (b"POST http://engine.internal:8000/v1/completions HTTP/1.1\r\nhost: engine.internal:8000\r\n"
                    b"accept: */*\r\nproxy-authorization: Basic dTpw\r\n")
    direct = request_head(Target("api.example", 443, tls_context("https://x"), None), "/v1/completions", {})
    assert direct == b"POST /v1/completions HTTP/1.1\r\nhost: api.example\r\n"  # the default port left out


def test_https_backends_trust_certifis_cas_as_httpx_did() -> None:
    context = tls_context("https://api.openai.com/v1")
    assert isinstance(context, ssl.SSLContext) and context.cert_store_stats()["x509_ca"] > 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls_context("http://127.0.0.1:8000/v1") is None  # plain HTTP: nothing to load


def test_a_proxy_we_cannot_use_fails_each_call_with_its_reason_not_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiohttp failed such a call at request time; the gateway (and its other backends) must still start."""
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    where = target("https://api.example/v1")
    assert where.proxy is None and "socks5://127.0.0.1:1080" in where.refused and "NO_PROXY" in where.refused
    monkeypatch.setenv("NO_PROXY", "api.example")
    assert target("https://api.example/v1").refused == ""  # NO_PROXY covers it: direct
