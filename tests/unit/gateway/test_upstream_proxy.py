"""The upstream client honours HTTP(S)_PROXY and NO_PROXY as httpx did (read once per backend)."""
from __future__ import annotations

import pytest

from gateway.backends.openai_http import _env_proxy


def test_no_proxy_in_the_environment_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _env_proxy("https://api.openai.com/v1") == {}


def test_the_proxy_for_the_scheme_unless_no_proxy_covers_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert str(_env_proxy("https://api.openai.com/v1")["proxy"]) == "http://proxy.example:3128"
    assert _env_proxy("http://127.0.0.1:8000/v1") == {}
