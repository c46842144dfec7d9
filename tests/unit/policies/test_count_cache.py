"""The prompt-count cache: exact (a hit is the count tiktoken gave for the very same text), bounded
by the text it holds (least recently used out first), safe across threads, and used for what comes
back (system prompt, history, tools), never for the new turn or completions."""
from __future__ import annotations

import threading

import pytest

from policies.count_cache import MIN_CHARS, CountCache
from policies.tokens import TokenCounter

SYSTEM = "You are the billing team's assistant; answer from the account data only. " * 40  # ~3,000 chars


@pytest.fixture()
def counter() -> TokenCounter:
    c = TokenCounter()
    c.warm(["o200k_base"])
    return c


def _chat(system: str, *turns: str) -> dict:
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"messages": messages}


def test_a_repeated_system_prompt_is_counted_once_and_the_count_is_unchanged(counter: TokenCounter) -> None:
    plain = TokenCounter(cache_chars=0)  # the cache off: every text through tiktoken
    first = _chat(SYSTEM, "What is my balance?")
    assert counter.count_prompt(first, "o200k_base") == plain.count_prompt(first, "o200k_base")
    cache = counter.cache("o200k_base")
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)  # the system prompt; the last turn is not kept
    again = _chat(SYSTEM, "And my last invoice?")
    assert counter.count_prompt(again, "o200k_base") == plain.count_prompt(again, "o200k_base")
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    # A system prompt one character different is another text: counted afresh, never a near hit.
    other = _chat(SYSTEM[:-1] + "!", "What is my balance?")
    assert counter.count_prompt(other, "o200k_base") == plain.count_prompt(other, "o200k_base")
    assert (cache.hits, cache.misses) == (1, 2)


def test_the_history_a_chat_resends_hits_from_the_turn_after(counter: TokenCounter) -> None:
    answer = "Your balance is 42 dollars, due on the first of the month. " * 30
    turn2 = _chat(SYSTEM, "What is my balance?", answer, "Why so much?")
    counter.count_prompt(turn2, "o200k_base")
    turn3 = _chat(SYSTEM, "What is my balance?", answer, "Why so much?", answer, "Thanks.")
    cache = counter.cache("o200k_base")
    hits = cache.hits
    assert counter.count_prompt(turn3, "o200k_base") == TokenCounter(cache_chars=0).count_prompt(turn3, "o200k_base")
    assert cache.hits == hits + 3  # the system prompt and the answer twice; short turns are not cached


def test_tools_are_cached_and_completions_and_completion_texts_are_not(counter: TokenCounter) -> None:
    tools = [{"type": "function", "function": {"name": f"tool_{i}", "description": "Looks up an account. " * 5,
                                               "parameters": {"type": "object"}}} for i in range(10)]
    body = {**_chat("Be brief.", "Hi"), "tools": tools}
    n = counter.count_prompt(body, "o200k_base")
    assert counter.count_prompt(body, "o200k_base") == n and counter.cache("o200k_base").hits == 1
    counter.count_text(SYSTEM, "o200k_base")
    assert counter.count_text(SYSTEM, "o200k_base") == len(counter.encoding("o200k_base").encode_ordinary(SYSTEM))
    for _ in range(2):  # a completions prompt is a new text, like a chat's last turn
        assert counter.count_prompt({"prompt": SYSTEM}, "o200k_base") == counter.count_text(SYSTEM, "o200k_base")
    assert counter.cache("o200k_base").hits == 1 and len(counter.cache("o200k_base")) == 1  # the tools only


def test_the_cache_holds_at_most_its_characters_least_recently_used_out_first() -> None:
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text)

    cache = CountCache(count, max_chars=3 * MIN_CHARS)
    a, b, c, d = ("a" * MIN_CHARS, "b" * MIN_CHARS, "c" * MIN_CHARS, "d" * MIN_CHARS)
    for text in (a, b, c, a, d):  # a used again before d arrives: b is the least recent, dropped
        assert cache(text) == MIN_CHARS
    assert len(cache) == 3 and cache.chars == 3 * MIN_CHARS
    calls.clear()
    for text in (a, c, d, b):
        cache(text)
    assert calls == [b]
    assert cache("short") == 5 and cache("short") == 5 and calls[-2:] == ["short", "short"]  # never cached
    assert cache("z" * (3 * MIN_CHARS + 1)) and len(cache) == 3  # larger than the whole cache: not kept


def test_threads_counting_the_same_texts_get_right_counts_and_keep_the_bound(counter: TokenCounter) -> None:
    texts = [f"{i} " + SYSTEM for i in range(40)]
    enc = counter.encoding("o200k_base")
    expected = {t: len(enc.encode_ordinary(t)) for t in texts}
    cache = CountCache(counter.cache("o200k_base").count, max_chars=10 * len(texts[0]))
    wrong: list[str] = []

    def work(offset: int) -> None:
        for k in range(200):
            text = texts[(offset + k * 7) % len(texts)]
            if cache(text) != expected[text]:
                wrong.append(text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong and len(cache) <= 10 and cache.chars <= 10 * len(texts[0])
