"""How the OpenAI-compatible backend finds the end of a stream in one read's payloads: [DONE] or an
error object ends it there (what came before is still relayed); a chunk that merely mentions "error"
in its text is content."""
from __future__ import annotations

from gateway.backends.openai_http import _end_of, error_object

CHUNK = b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}'
ERROR = b'{"error":{"message":"engine died","type":"server_error","param":null,"code":null}}'


def test_a_read_without_an_end() -> None:
    assert _end_of([CHUNK, CHUNK]) == -1
    assert _end_of([]) == -1


def test_done_and_errors_are_found_where_they_are() -> None:
    assert _end_of([b"[DONE]"]) == 0
    assert _end_of([CHUNK, CHUNK, b"[DONE]"]) == 2
    assert _end_of([CHUNK, ERROR, CHUNK]) == 1


def test_the_word_error_inside_content_is_no_error_object() -> None:
    text = b'{"id":"c","choices":[{"index":0,"delta":{"content":"\\"error\\": not an error"}}]}'
    assert not error_object(text)
    late = b'{"id":"' + b"x" * 64 + b'","error":{"message":"m"}}'  # only the object's head is looked at
    assert not error_object(late)
    assert _end_of([text, late]) == -1


def test_an_error_object_with_choices_is_a_chunk() -> None:
    both = b'{"error":null,"choices":[{"index":0,"delta":{"content":"x"}}]}'
    assert not error_object(both)
    assert error_object(ERROR)
