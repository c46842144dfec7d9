"""Which URL the client posts to, from the forms a user writes."""

from __future__ import annotations

import pytest

from observability.bench.client import Target


@pytest.mark.parametrize(
    ("url", "endpoint", "expected"),
    [
        ("http://127.0.0.1:8000", "chat", Target("http", "127.0.0.1", 8000, "/v1/chat/completions")),
        ("http://127.0.0.1:8000/v1/", "completions", Target("http", "127.0.0.1", 8000, "/v1/completions")),
        ("localhost:9", "chat", Target("http", "localhost", 9, "/v1/chat/completions")),
        (
            "https://api.example.com/openai/v1",
            "chat",
            Target("https", "api.example.com", 443, "/openai/v1/chat/completions"),
        ),
        ("http://h/v1/chat/completions", "chat", Target("http", "h", 80, "/v1/chat/completions")),
    ],
)
def test_base_urls_become_the_endpoint(url: str, endpoint: str, expected: Target) -> None:
    assert Target.parse(url, endpoint) == expected


def test_not_http_is_refused() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Target.parse("ftp://x/v1", "chat")
