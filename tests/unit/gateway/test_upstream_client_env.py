"""The upstream client keeps what httpx gave: HTTP(S)_PROXY and NO_PROXY honoured (read once per
backend), and certifi's CAs for https backends."""
from __future__ import annotations

import ssl

import pytest

from gateway.backends.openai_http import _env_proxy, tls_context


def test_no_proxy_in_the_environment_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _env_proxy("https://api.openai.com/v1") == {}


def test_the_proxy_for_the_scheme_unless_no_proxy_covers_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert str(_env_proxy("https://api.openai.com/v1")["proxy"]) == "http://proxy.example:3128"
    assert _env_proxy("http://127.0.0.1:8000/v1") == {}


def test_https_backends_trust_certifis_cas_as_httpx_did() -> None:
    context = tls_context("https://api.openai.com/v1")
    assert isinstance(context, ssl.SSLContext) and context.cert_store_stats()["x509_ca"] > 0
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert tls_context("http://127.0.0.1:8000/v1") is True  # plain HTTP: nothing to load
