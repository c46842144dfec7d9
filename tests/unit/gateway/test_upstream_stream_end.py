"""How the OpenAI-compatible backend sorts one read's payloads: [DONE] or an error object ends the stream
there (what came before is still relayed); a chunk that merely mentions "error" in its text is content; an
empty frame (`{}`: no choices, usage or error) is dropped."""
from __future__ import annotations

from gateway.backends.stream_frames import empty_frame, error_object, sort_out

CHUNK = b'{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}'
ERROR = b'{"error":{"message":"engine died","type":"server_error","param":null,"code":null}}'


def test_a_read_without_an_end() -> None:
    read = [CHUNK, CHUNK]
    assert sort_out(read)[0] is read and sort_out(read)[1] is None  # the common read: no copy
    assert sort_out([]) == ([], None)


def test_done_and_errors_are_found_where_they_are() -> None:
    assert sort_out([b"[DONE]"]) == ([], b"[DONE]")
    assert sort_out([CHUNK, CHUNK, b"[DONE]", CHUNK]) == ([CHUNK, CHUNK], b"[DONE]")
    assert sort_out([CHUNK, ERROR, CHUNK]) == ([CHUNK], ERROR)


def test_the_word_error_inside_content_is_no_error_object() -> None:
    text = b'{"id":"c","choices":[{"index":0,"delta":{"content":"\\"error\\": not an error"}}]}'
    assert not error_object(text)
    late = b'{"id":"' + b"x" * 64 + b'","error":{"message":"m"}}'  # only the object's head is looked at
    assert not error_object(late)
    assert sort_out([text, late]) == ([text, late], None)


def test_an_error_object_with_choices_is_a_chunk() -> None:
    both = b'{"error":null,"choices":[{"index":0,"delta":{"content":"x"}}]}'
    assert not error_object(both)
    assert error_object(ERROR)


USAGE = b'{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}'


def test_empty_frames_are_dropped_wherever_they_are() -> None:
    assert empty_frame(b"{}") and empty_frame(b'{"id":"c","choices":[],"usage":null}')
    assert not empty_frame(CHUNK) and not empty_frame(USAGE) and not empty_frame(ERROR)
    assert not empty_frame(b"[]") and not empty_frame(b"not json")  # not an object: relayed as it came
    assert sort_out([b"{}", CHUNK, b"{}", USAGE, b"[DONE]"]) == ([CHUNK, USAGE], b"[DONE]")
    assert sort_out([CHUNK, b"{}", CHUNK]) == ([CHUNK, CHUNK], None)
    assert sort_out([b"{}", b"{}"]) == ([], None)
