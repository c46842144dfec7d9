"""The process-wide litellm session (gateway/backends/litellm_redirects.py): no redirects, no cookies."""
from __future__ import annotations

import importlib
from types import SimpleNamespace

import httpx
import pytest

from gateway.backends.litellm_redirects import stop_sdk_redirects
from policies.offline import configure_offline_env


@pytest.fixture
def litellm_stand_in() -> SimpleNamespace:
    """litellm's one module attribute this touches, on a stand-in, so the real module's stays unset."""
    configure_offline_env()
    importlib.import_module("litellm")  # the client factory below lives in litellm
    return SimpleNamespace(aclient_session=None)


def test_the_shared_session_follows_no_redirect_and_keeps_no_cookie(litellm_stand_in: SimpleNamespace) -> None:
    stop_sdk_redirects(litellm_stand_in)
    session = litellm_stand_in.aclient_session
    assert session is not None and session.follow_redirects is False
    request = httpx.Request("POST", "https://api.example.test/v1/chat/completions")
    answer = httpx.Response(200, headers={"set-cookie": "affinity=key-a; Path=/"}, request=request)
    session.cookies.extract_cookies(answer)
    assert len(session.cookies.jar) == 0  # another key's next call to this host carries nothing of key a's


def test_a_session_set_already_is_left_alone() -> None:
    mine = object()
    stand_in = SimpleNamespace(aclient_session=mine)
    stop_sdk_redirects(stand_in)
    assert stand_in.aclient_session is mine
